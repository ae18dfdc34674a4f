-- The schema of a new stepflow database: what SQLAlchemy's `metadata.create_all` writes for the tables
-- of storage/tables.py, then the alembic_version table (storage.schema stamps it with HEAD).
-- Generated: do not edit. When tables.py changes, write it again with `python -m storage.schema_sql`.

CREATE TABLE executions (
	pk INTEGER NOT NULL, 
	id VARCHAR NOT NULL, 
	name VARCHAR NOT NULL, 
	kind VARCHAR NOT NULL, 
	command TEXT NOT NULL, 
	working_directory VARCHAR NOT NULL, 
	status VARCHAR NOT NULL, 
	exit_code INTEGER, 
	error_message TEXT, 
	abort_reason VARCHAR, 
	created_at VARCHAR(32) NOT NULL, 
	started_at VARCHAR(32), 
	completed_at VARCHAR(32), 
	environment JSON NOT NULL, 
	user VARCHAR NOT NULL, 
	tags JSON NOT NULL, 
	metadata JSON NOT NULL, 
	targets JSON NOT NULL, 
	total_steps INTEGER NOT NULL, 
	completed_steps INTEGER NOT NULL, 
	current_step_index INTEGER, 
	progress_percentage FLOAT NOT NULL, 
	workflow_source TEXT, 
	rerun_of VARCHAR, 
	owner VARCHAR, 
	priority INTEGER DEFAULT '0' NOT NULL, 
	admitted_at VARCHAR(32), 
	source VARCHAR DEFAULT '' NOT NULL, 
	labels JSON DEFAULT '{}' NOT NULL, 
	CONSTRAINT pk_executions PRIMARY KEY (pk), 
	CONSTRAINT uq_executions_id UNIQUE (id)
);

CREATE INDEX ix_executions_created_at ON executions (created_at);

CREATE INDEX ix_executions_status_created_at ON executions (status, created_at);

CREATE INDEX ix_executions_status_priority_created_at ON executions (status, priority, created_at);

CREATE INDEX ix_executions_user_created_at ON executions (user, created_at);

CREATE TABLE queue_items (
	pk INTEGER NOT NULL, 
	id VARCHAR NOT NULL, 
	queue VARCHAR NOT NULL, 
	payload TEXT, 
	priority INTEGER NOT NULL, 
	status VARCHAR NOT NULL, 
	worker VARCHAR, 
	attempt INTEGER NOT NULL, 
	max_attempts INTEGER NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	claimed_at VARCHAR(32), 
	heartbeat_at VARCHAR(32), 
	finished_at VARCHAR(32), 
	result TEXT, 
	execution_id VARCHAR, 
	labels JSON NOT NULL, 
	CONSTRAINT pk_queue_items PRIMARY KEY (pk), 
	CONSTRAINT uq_queue_items_id UNIQUE (id)
);

CREATE INDEX ix_queue_items_claim ON queue_items (queue, status, priority DESC);

CREATE INDEX ix_queue_items_execution_id ON queue_items (execution_id);

CREATE INDEX ix_queue_items_status_heartbeat_at ON queue_items (status, heartbeat_at);

CREATE TABLE counters (
	name VARCHAR NOT NULL, 
	value INTEGER NOT NULL, 
	CONSTRAINT pk_counters PRIMARY KEY (name)
)
 WITHOUT ROWID

;

CREATE TABLE registry (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	kind VARCHAR NOT NULL, 
	serial VARCHAR, 
	name VARCHAR NOT NULL, 
	data JSON NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	updated_at VARCHAR(32) NOT NULL, 
	CONSTRAINT uq_registry_kind_name UNIQUE (kind, name), 
	CONSTRAINT uq_registry_serial UNIQUE (serial)
);

CREATE TABLE ops_jobs (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	uuid VARCHAR NOT NULL, 
	serial VARCHAR NOT NULL, 
	name VARCHAR NOT NULL, 
	description TEXT NOT NULL, 
	job_type VARCHAR NOT NULL, 
	actions JSON NOT NULL, 
	target_ids JSON NOT NULL, 
	scheduled_at VARCHAR(32), 
	schedule_state VARCHAR, 
	created_at VARCHAR(32) NOT NULL, 
	updated_at VARCHAR(32) NOT NULL, 
	CONSTRAINT uq_ops_jobs_uuid UNIQUE (uuid), 
	CONSTRAINT uq_ops_jobs_serial UNIQUE (serial)
);

CREATE INDEX ix_ops_jobs_created_at ON ops_jobs (created_at);

CREATE INDEX ix_ops_jobs_schedule_state_scheduled_at ON ops_jobs (schedule_state, scheduled_at);

CREATE TABLE steps (
	pk INTEGER NOT NULL, 
	id VARCHAR NOT NULL, 
	execution_id VARCHAR NOT NULL, 
	parent_id VARCHAR, 
	name VARCHAR NOT NULL, 
	kind VARCHAR NOT NULL, 
	step_index INTEGER NOT NULL, 
	description TEXT NOT NULL, 
	status VARCHAR NOT NULL, 
	exit_code INTEGER, 
	error_message TEXT, 
	abort_reason VARCHAR, 
	created_at VARCHAR(32) NOT NULL, 
	started_at VARCHAR(32), 
	completed_at VARCHAR(32), 
	estimated_duration FLOAT, 
	stop_on_error BOOLEAN NOT NULL, 
	progress FLOAT, 
	metadata JSON NOT NULL, 
	target VARCHAR NOT NULL, 
	cpu_percent FLOAT, 
	rss_bytes INTEGER, 
	CONSTRAINT pk_steps PRIMARY KEY (pk), 
	CONSTRAINT uq_steps_id UNIQUE (id), 
	CONSTRAINT fk_steps_execution_id_executions FOREIGN KEY(execution_id) REFERENCES executions (id) ON DELETE CASCADE, 
	CONSTRAINT fk_steps_parent_id_steps FOREIGN KEY(parent_id) REFERENCES steps (id) ON DELETE CASCADE
);

CREATE INDEX ix_steps_execution_id_step_index ON steps (execution_id, step_index);

CREATE INDEX ix_steps_parent_id ON steps (parent_id);

CREATE TABLE log_lines (
	execution_pk INTEGER NOT NULL, 
	seq INTEGER NOT NULL, 
	step_pk INTEGER, 
	stream VARCHAR NOT NULL, 
	ts FLOAT NOT NULL, 
	text TEXT NOT NULL, 
	CONSTRAINT pk_log_lines PRIMARY KEY (execution_pk, seq), 
	CONSTRAINT fk_log_lines_execution_pk_executions FOREIGN KEY(execution_pk) REFERENCES executions (pk) ON DELETE CASCADE
)
 WITHOUT ROWID

;

CREATE TABLE log_spans (
	execution_pk INTEGER NOT NULL, 
	first_seq INTEGER NOT NULL, 
	step_pk INTEGER, 
	lines INTEGER NOT NULL, 
	CONSTRAINT pk_log_spans PRIMARY KEY (execution_pk, first_seq), 
	CONSTRAINT fk_log_spans_execution_pk_executions FOREIGN KEY(execution_pk) REFERENCES executions (pk) ON DELETE CASCADE
)
 WITHOUT ROWID

;

CREATE INDEX ix_log_spans_execution_pk_step_pk_first_seq_lines ON log_spans (execution_pk, step_pk, first_seq, lines);

CREATE TABLE ops_executions (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	uuid VARCHAR NOT NULL, 
	serial VARCHAR NOT NULL, 
	job_id INTEGER NOT NULL, 
	number INTEGER NOT NULL, 
	execution_pk INTEGER, 
	execution_id VARCHAR, 
	status VARCHAR NOT NULL, 
	started_at VARCHAR(32), 
	completed_at VARCHAR(32), 
	duration FLOAT, 
	error TEXT, 
	created_at VARCHAR(32) NOT NULL, 
	CONSTRAINT uq_ops_executions_job_id_number UNIQUE (job_id, number), 
	CONSTRAINT uq_ops_executions_uuid UNIQUE (uuid), 
	CONSTRAINT uq_ops_executions_serial UNIQUE (serial), 
	CONSTRAINT fk_ops_executions_job_id_ops_jobs FOREIGN KEY(job_id) REFERENCES ops_jobs (id) ON DELETE CASCADE, 
	CONSTRAINT fk_ops_executions_execution_pk_executions FOREIGN KEY(execution_pk) REFERENCES executions (pk) ON DELETE CASCADE
);

CREATE INDEX ix_ops_executions_created_at_status_duration ON ops_executions (created_at, status, duration);

CREATE INDEX ix_ops_executions_execution_pk ON ops_executions (execution_pk);

CREATE INDEX ix_ops_executions_job_id_created_at_status_duration ON ops_executions (job_id, created_at, status, duration);

CREATE TABLE artifacts (
	id VARCHAR NOT NULL, 
	execution_id VARCHAR NOT NULL, 
	step_id VARCHAR, 
	name VARCHAR NOT NULL, 
	file_name VARCHAR NOT NULL, 
	file_path VARCHAR NOT NULL, 
	file_size INTEGER NOT NULL, 
	mime_type VARCHAR NOT NULL, 
	artifact_type VARCHAR NOT NULL, 
	sha256 VARCHAR NOT NULL, 
	description TEXT NOT NULL, 
	created_at VARCHAR(32) NOT NULL, 
	tags JSON NOT NULL, 
	is_public BOOLEAN NOT NULL, 
	retention_days INTEGER NOT NULL, 
	CONSTRAINT pk_artifacts PRIMARY KEY (id), 
	CONSTRAINT fk_artifacts_execution_id_executions FOREIGN KEY(execution_id) REFERENCES executions (id) ON DELETE CASCADE, 
	CONSTRAINT fk_artifacts_step_id_steps FOREIGN KEY(step_id) REFERENCES steps (id) ON DELETE CASCADE
);

CREATE INDEX ix_artifacts_execution_id_created_at ON artifacts (execution_id, created_at);

CREATE INDEX ix_artifacts_step_id ON artifacts (step_id);

CREATE TABLE ops_branches (
	id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, 
	uuid VARCHAR NOT NULL, 
	serial VARCHAR NOT NULL, 
	ops_execution_id INTEGER NOT NULL, 
	number INTEGER NOT NULL, 
	job_id INTEGER NOT NULL, 
	target_id INTEGER NOT NULL, 
	target_serial VARCHAR NOT NULL, 
	target_name VARCHAR NOT NULL, 
	step_pk INTEGER, 
	step_id VARCHAR, 
	status VARCHAR NOT NULL, 
	started_at VARCHAR(32), 
	completed_at VARCHAR(32), 
	duration FLOAT, 
	exit_code INTEGER, 
	error TEXT, 
	created_at VARCHAR(32) NOT NULL, 
	CONSTRAINT uq_ops_branches_ops_execution_id_number UNIQUE (ops_execution_id, number), 
	CONSTRAINT uq_ops_branches_uuid UNIQUE (uuid), 
	CONSTRAINT uq_ops_branches_serial UNIQUE (serial), 
	CONSTRAINT fk_ops_branches_ops_execution_id_ops_executions FOREIGN KEY(ops_execution_id) REFERENCES ops_executions (id) ON DELETE CASCADE
);

CREATE INDEX ix_ops_branches_job_id_target_id_created_at_status_duration ON ops_branches (job_id, target_id, created_at, status, duration);

CREATE INDEX ix_ops_branches_open ON ops_branches (target_id) WHERE status IN ('pending', 'running');

CREATE INDEX ix_ops_branches_step_pk ON ops_branches (step_pk);

CREATE INDEX ix_ops_branches_target_id_created_at_status_duration ON ops_branches (target_id, created_at, status, duration);

CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));

CREATE TRIGGER ops_execution_follows AFTER UPDATE OF status, started_at, completed_at ON executions WHEN NEW.status IS NOT OLD.status OR NEW.started_at IS NOT OLD.started_at OR NEW.completed_at IS NOT OLD.completed_at BEGIN UPDATE ops_executions SET status = NEW.status, started_at = NEW.started_at, completed_at = NEW.completed_at, duration = (julianday(NEW.completed_at) - julianday(NEW.started_at)) * 86400.0, error = coalesce(NEW.error_message, error) WHERE execution_pk = NEW.pk; END;

CREATE TRIGGER ops_branch_follows AFTER UPDATE OF status, started_at, completed_at, exit_code ON steps WHEN NEW.kind = 'branch' AND (NEW.status IS NOT OLD.status OR NEW.started_at IS NOT OLD.started_at OR NEW.completed_at IS NOT OLD.completed_at OR NEW.exit_code IS NOT OLD.exit_code) BEGIN UPDATE ops_branches SET status = NEW.status, started_at = NEW.started_at, completed_at = NEW.completed_at, duration = (julianday(NEW.completed_at) - julianday(NEW.started_at)) * 86400.0, exit_code = NEW.exit_code, error = NEW.error_message WHERE step_pk = NEW.pk; END;

