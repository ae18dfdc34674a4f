#!/usr/bin/env python3
"""A Python script that reports its progress with STEP_PROGRESS markers."""

import argparse
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--items", type=int, default=40)
parser.add_argument("--delay", type=float, default=0.1)
args = parser.parse_args()

print("STEP_START:load-data", flush=True)
time.sleep(args.delay * 3)
print(f"loaded {args.items} items", flush=True)
print("STEP_COMPLETE:load-data", flush=True)

print("STEP_START:process", flush=True)
for i in range(1, args.items + 1):
    time.sleep(args.delay)
    print(f"item {i}: ok", flush=True)
    print(f"STEP_PROGRESS:{i}/{args.items}", flush=True)
print("STEP_COMPLETE:process", flush=True)
print("all items processed", file=sys.stderr, flush=True)
