'use strict'
// Node.js peer of the cross-language hand-over matrix (interface: see peer.py).
const net = require('node:net')
const { takeOver, HandoverServer } = require('update-lock')

const [mode, socket, release] = process.argv.slice(2)

async function serve() {
  const listener = net.createServer()
  await new Promise((resolve) => listener.listen({ port: 0, host: '127.0.0.1' }, resolve))
  const port = listener.address().port
  const server = HandoverServer.bind({ socket, release })
  console.log(`ready ${port}`)
  const req = await server.accept({ timeout: 30000 })
  if (!req) throw new Error('nobody came')
  // grant() copies the descriptor when it is called, so the server can stop accepting in the
  // same tick, before the event loop could accept a connection meant for the successor.
  const granted = server.grant(req, { state: `port=${port}`, fds: [{ label: 'http', fd: listener._handle.fd }] })
  listener.close()
  const peer = await granted
  if (process.env.HANDOVER_T0) console.log(`t1 ${Number(process.hrtime.bigint()) / 1e9}`)
  console.log(`granted ${peer.release}`)
}

async function take() {
  // For bench/handover.sh: when the take call starts (CLOCK_MONOTONIC, as Python's monotonic).
  if (process.env.HANDOVER_T0) console.log(`t0 ${Number(process.hrtime.bigint()) / 1e9}`)
  const got = await takeOver({ socket, release })
  if (!got) {
    console.log('none')
    process.exit(4)
  }
  console.log(`taken ${got.predecessor.release} ${got.state.toString()}`)
  const fd = got.fds.find((f) => f.label === 'http').fd
  const server = net.createServer((c) => {
    c.once('data', () => {
      c.end(`hello from ${release}\n`)
      server.close()
    })
  })
  server.listen({ fd })
}

;(mode === 'serve' ? serve() : take()).catch((e) => {
  console.error(e)
  process.exit(1)
})
