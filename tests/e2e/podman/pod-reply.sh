#!/bin/sh
# The test server's answer to one connection (busybox nc -e): the first line back, and in the
# container's log.
read -r line
echo "got=$line"
echo "server got=$line" >&2
