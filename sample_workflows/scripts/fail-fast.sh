#!/usr/bin/env bash
# A step marked stop_on_error reports an error: the whole command is stopped and the execution fails.
echo "STEP_START:preflight"
echo "disk space ok"
echo "STEP_COMPLETE:preflight"
echo "STEP_START:database_check[stop_on_error=true]"
echo "connecting to db.internal:5432"; sleep 0.3
echo "STEP_ERROR:database unreachable: connection refused"
sleep 30   # never reached: stop_on_error stops the command
echo "STEP_START:migrate"
