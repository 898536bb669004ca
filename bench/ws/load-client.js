// WebSocket load client for `bench/run ws`:
//   node load-client.js URL CONNECTIONS MESSAGE_BYTES SECONDS
// Opens CONNECTIONS sockets, then on each one sends a message of MESSAGE_BYTES random bytes,
// waits for its echo, checks it byte for byte, and sends the next (ping-pong) until SECONDS
// have passed. Prints one line `BENCH-JSON {...}` with the counts and round-trip times.
// Needs the npm `ws` package on NODE_PATH. BENCH_WS_HEADERS, a JSON object, adds headers to
// every handshake (the Hub mode's login cookie).
'use strict';

const crypto = require('crypto');
const WebSocket = require('ws');

const CONNECT_TIMEOUT_MS = 15000;
const HEADERS = JSON.parse(process.env.BENCH_WS_HEADERS || '{}');

function report(fields) {
  process.stdout.write(`BENCH-JSON ${JSON.stringify(fields)}\n`);
}

function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

function connect(url) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, {
      perMessageDeflate: false, maxPayload: 64 << 20, headers: HEADERS,
    });
    socket.binaryType = 'nodebuffer';
    socket.once('open', () => resolve(socket));
    socket.once('error', reject);
    socket.once('unexpected-response', (request, response) => {
      reject(new Error(`HTTP ${response.statusCode} instead of a WebSocket upgrade`));
    });
  });
}

async function main() {
  const [url, connectionsText, sizeText, secondsText] = process.argv.slice(2);
  const connections = Number(connectionsText);
  const size = Number(sizeText);
  const seconds = Number(secondsText);
  if (!url || !(connections > 0) || !(size > 0) || !(seconds > 0)) {
    console.error('usage: node load-client.js URL CONNECTIONS MESSAGE_BYTES SECONDS');
    process.exit(2);
  }

  const timer = setTimeout(() => {
    report({ error: `not all ${connections} connections open after ${CONNECT_TIMEOUT_MS} ms` });
    process.exit(1);
  }, CONNECT_TIMEOUT_MS);
  let sockets;
  try {
    sockets = await Promise.all(Array.from({ length: connections }, () => connect(url)));
  } catch (error) {
    report({ error: `cannot connect: ${error.message}` });
    process.exit(1);
  }
  clearTimeout(timer);

  const payload = crypto.randomBytes(size);
  const roundTrips = [];
  let messages = 0;
  let bytes = 0;
  let errors = 0;
  let running = true;
  let alive = sockets.length;
  const started = process.hrtime.bigint();

  const finish = () => {
    if (!running) return;
    running = false;
    const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
    roundTrips.sort((a, b) => a - b);
    report({
      seconds: elapsed, messages, bytes, errors,
      p50_ms: percentile(roundTrips, 50), p99_ms: percentile(roundTrips, 99),
    });
    for (const socket of sockets) socket.terminate();
    process.exit(0);
  };

  for (const socket of sockets) {
    let sentAt = 0n;
    const send = () => {
      sentAt = process.hrtime.bigint();
      socket.send(payload, { binary: true });
    };
    socket.on('message', (data) => {
      if (!running) return;
      if (data.length === size && payload.equals(data)) {
        messages += 1;
        bytes += data.length;
        roundTrips.push(Number(process.hrtime.bigint() - sentAt) / 1e6);
      } else {
        errors += 1;
      }
      send();
    });
    const lost = () => {
      if (!running) return;
      errors += 1;
      alive -= 1;
      if (alive === 0) finish();
    };
    socket.once('close', lost);
    socket.on('error', () => {});
    send();
  }
  setTimeout(finish, seconds * 1000);
}

main();
