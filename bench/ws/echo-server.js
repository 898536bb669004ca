// WebSocket echo backend for `bench/run ws`: node echo-server.js PORT
// Every message goes back unchanged on any path; a plain HTTP request gets a short 200
// (readiness probes, the harness's checks). Needs the npm `ws` package on NODE_PATH.
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node echo-server.js PORT');
  process.exit(2);
}

const server = http.createServer((request, response) => {
  response.writeHead(200, { 'content-type': 'text/plain' });
  response.end('ws echo backend\n');
});

const sockets = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 64 << 20 });
sockets.on('connection', (socket) => {
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
  socket.on('error', () => socket.terminate());
});

server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
