#!/usr/bin/env bash
# A deployment script that announces its steps with StepFlow Monitor markers.
# Try it alone too:  stepflow exec -- bash sample_workflows/scripts/deploy.sh
set -euo pipefail
echo "META:DESCRIPTION:Deploy the sample service"
echo "STEP_START:environment_setup[stop_on_error=true]{duration:2}"
echo "checking tools"; sleep 0.3
echo "STEP_PROGRESS:50"
echo "tools ok"; sleep 0.3
echo "STEP_COMPLETE:environment_setup"
echo "STEP_START:build --duration=3"
for i in $(seq 1 5); do echo "compiling module $i"; echo "STEP_PROGRESS:$i/5"; sleep 0.2; done
echo "STEP_COMPLETE:build"
echo "STEP_START:migrate"
echo "META:ESTIMATED_DURATION:1"
echo "applying 3 migrations"; sleep 0.3
echo "warning: migration 2 took longer than usual" >&2
echo "STEP_COMPLETE:migrate"
echo "STEP_START:restart"
echo "restarting service"; sleep 0.3
echo "service is up"
echo "STEP_COMPLETE:restart"
