// playbook stress --pool node-postgres: the same bursts and gaps on a pg.Pool (pg 8, pg-pool 3).
// Reads its configuration as JSON on stdin; writes one JSON line per event on stdout (times in
// epoch ms): open, close (by_pool false when the client died first: the pool's 'error' event),
// unit (one read-only transaction). SIGTERM closes the pool and exits.
'use strict'
const { Pool } = require('pg')

function emit(event) {
  process.stdout.write(JSON.stringify({ at_ms: Date.now(), ...event }) + '\n')
}

async function main() {
  let text = ''
  for await (const chunk of process.stdin) text += chunk
  const config = JSON.parse(text)
  const pool = new Pool({ ...config.connection, ...config.pool })
  const dead = new Map() // processID -> the error that ended it while idle
  let stopping = false

  pool.on('connect', (client) => emit({ ev: 'open', pid: client.processID }))
  pool.on('error', (err, client) => {
    // an idle client's connection ended under the pool (server timeout, reset): it is removed next
    dead.set(client.processID, err)
  })
  pool.on('remove', (client) => {
    const err = dead.get(client.processID)
    emit({
      ev: 'close',
      pid: client.processID,
      by_pool: !err,
      error: err ? `${err.name}: ${err.message}` : null,
      code: err && err.code ? String(err.code) : null,
    })
  })

  const start = Date.now() // the schedule's clock starts once the pool exists (node's start-up is not in it)
  emit({ ev: 'ready', at_ms: start })
  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))
  process.on('SIGTERM', () => { stopping = true })

  async function unit(worker) {
    const started = Date.now()
    let client = null
    let pid = 0
    let waitS = null
    try {
      client = await pool.connect()
      waitS = (Date.now() - started) / 1000
      pid = client.processID
      await client.query('BEGIN READ ONLY')
      await client.query(`SET LOCAL statement_timeout = ${config.statement_timeout_ms}`)
      await client.query(`SELECT pg_sleep(${config.sleep_s})`)
      await client.query('COMMIT')
      client.release()
      emit({ ev: 'unit', worker, started_ms: started, ok: true, wait_s: waitS, pid })
    } catch (err) {
      if (client) client.release(err) // a failed client is destroyed, not reused
      emit({
        ev: 'unit', worker, started_ms: started, ok: false, wait_s: waitS, pid,
        code: err.code ? String(err.code) : null,
        error: `${err.name}: ${err.message}`.slice(0, 400),
        pool_timeout: /timeout exceeded when trying to connect/.test(err.message),
      })
    }
  }

  async function worker(i) {
    for (const phase of config.phases) {
      while (!stopping && Date.now() < start + phase.burst_end * 1000) await unit(i)
      while (!stopping && Date.now() < start + phase.end * 1000) {
        await wait(Math.min(100, start + phase.end * 1000 - Date.now()))
      }
      if (stopping) return
    }
  }

  await Promise.all(Array.from({ length: config.workers }, (_, i) => worker(i)))
  stopping = true
  await pool.end()
}

// exitCode, not exit(): stdout is a pipe, written asynchronously, and the last close events must arrive
main().then(
  () => { process.exitCode = 0 },
  (err) => {
    process.stderr.write(`${err.name}: ${err.message}\n`)
    process.exitCode = 1
  }
)
