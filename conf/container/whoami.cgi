#!/bin/sh
# busybox httpd CGI of the image conf/container/build-image makes: what the app sees.
# CRLF after the header: busybox httpd passes a CGI's header as written, and hubtwist's
# HTTP client (Twisted's) does not take bare-LF header lines (502 "App not reachable").
printf 'Content-Type: text/plain\r\n\r\n'
echo "uri=$REQUEST_URI"
echo "user=$HTTP_X_HUBTWIST_USER"
echo "uid=$(id -u) gid=$(id -g)"
