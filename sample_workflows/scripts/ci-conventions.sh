#!/usr/bin/env bash
# A script written for CI systems: GitHub Actions and TeamCity markers become steps here too.
echo "::group::Install dependencies"
echo "resolving 12 packages"; sleep 0.2
echo "::add-mask::s3cr3t-t0ken"
echo "using token s3cr3t-t0ken"
echo "::endgroup::"
echo "##teamcity[blockOpened name='Compile']"
echo "##teamcity[progressMessage 'compiling 3 files']"
sleep 0.3
echo "##teamcity[blockClosed name='Compile']"
echo "::group::Test"
echo "::notice file=tests/test_api.py,line=3::2 tests were slow"
echo "42 passed"; sleep 0.2
echo "::endgroup::"
echo "##[group]Azure-style summary"
echo "##vso[task.setprogress value=100;]done"
echo "##[endgroup]"
