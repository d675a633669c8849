'use strict'
// An HTTP service that hands its listening socket to the next release (update-lock hand-over).
// The same program as ../python/app.py: take the listener over (or bind PORT on a first
// start), answer "<release> <pid>", serve the hand-over to the next release (stop accepting,
// finish in-flight requests, grant the socket and the request count, exit 0), and keep
// serving after SIGTERM for GRACE seconds (the Supervisor stops the old release right after
// starting the new one).
const http = require('node:http')
const { takeOver, HandoverServer, listenerFd, listenBacklog } = require('update-lock')

const RELEASE = process.env.RELEASE || 'dev'
const PORT = Number(process.env.PORT || 8080)
const GRACE = Number(process.env.GRACE || 8) * 1000
let served = 0
const log = (msg) => console.error(`[${RELEASE}] ${msg}`)

async function main() {
  const got = await takeOver({ release: RELEASE })
  const httpd = http.createServer((req, res) => {
    served += 1
    res.setHeader('Connection', 'close')
    res.end(`${RELEASE} ${process.pid}\n`)
  })
  await new Promise((resolve) => {
    if (got) {
      served = Number(got.state.toString() || 0)
      log(`took over from ${got.predecessor.release} (it had served ${served})`)
      httpd.listen({ fd: got.fds.find((f) => f.label === 'http').fd, backlog: listenBacklog() }, resolve)
    } else {
      log('first start: no predecessor')
      httpd.listen({ port: PORT, host: process.env.HOST || '0.0.0.0', backlog: listenBacklog() }, resolve)
    }
  })
  console.log(`ready ${RELEASE} ${httpd.address().port}`)

  const server = HandoverServer.bind({ release: RELEASE })
  // Keep serving after SIGTERM until the grace runs out, then close (serve() returns null).
  process.on('SIGTERM', () => setTimeout(() => server.close(), GRACE).unref())
  const fd = listenerFd(httpd)
  const successor = await server.serve(
    async (succ) => {
      // Node closes a listener's descriptor when the server closes, so the socket is sent
      // first and the server stops accepting right after the grant (connections it still
      // accepts in between are served: both processes share the one kernel socket).
      log(`${succ.release} asks to take over`)
      return { state: Buffer.from(String(served)), fds: [{ label: 'http', fd }] }
    },
    { resume: (err) => log(`hand-over failed (${err.code}/${err.reason}); serving on`) },
  ) // null: closed after the grace with nobody taking over
  if (!successor) log('no successor came: stopping')
  // Stop accepting and wait for the requests in flight.
  await new Promise((resolve) => httpd.close(resolve))
  log(`exiting after ${served} requests` + (successor ? `, handed over to ${successor.release}` : ''))
  process.exit(0)
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
