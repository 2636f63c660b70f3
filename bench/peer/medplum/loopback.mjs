// Preloaded into the Medplum server process (node --import) by start.sh.
//
// The comparison runs entirely on this machine, so the peer must neither be
// reachable from outside nor reach out itself:
//  - Medplum's server calls app.listen(port) with no host, which binds every
//    interface; a listen() given only a port is bound to 127.0.0.1 instead.
//  - At start-up Medplum asks a public release API whether a newer version
//    exists, and some features fetch remote URLs. fetch() to any host other
//    than loopback fails at once, without a DNS lookup or a connection.
import net from 'node:net';

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1', '[::1]']);

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' && (args.length === 1 || typeof args[1] === 'function')) {
    args.splice(1, 0, '127.0.0.1');
  }
  return listen.apply(this, args);
};

const realFetch = globalThis.fetch;
globalThis.fetch = function (input, init) {
  let host;
  try {
    const url = input instanceof Request ? input.url : String(input instanceof URL ? input.href : input);
    host = new URL(url).hostname;
  } catch {
    host = undefined;
  }
  if (host !== undefined && !LOOPBACK.has(host)) {
    return Promise.reject(new TypeError(`outbound fetch to ${host} refused: this peer runs on loopback only`));
  }
  return realFetch.call(this, input, init);
};
