#!/bin/sh
# busybox httpd CGI of the image conf/container/build-image makes: what the app sees.
# Bare-LF header lines, as shell CGI scripts write them: busybox httpd passes them after its
# own CRLF status line, and hubtwist reads a lone LF as a line end (RFC 9112 2.2).
printf 'Content-Type: text/plain\n\n'
echo "uri=$REQUEST_URI"
echo "user=$HTTP_X_HUBTWIST_USER"
echo "uid=$(id -u) gid=$(id -g)"
