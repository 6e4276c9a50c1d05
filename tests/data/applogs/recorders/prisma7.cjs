// Writes what a Node app logs when Prisma 7 (adapter-pg) and node-postgres lose their sessions:
// real errors from real sockets (a server that resets the connection, a port nobody listens on),
// printed the way apps print them (console.error with a timestamp, and Prisma's own prisma:error).
const net = require('node:net')
const { PrismaPg } = require('@prisma/adapter-pg')
const { PrismaClientKnownRequestError } = require('@prisma/client-runtime-utils')
const pg = require('pg')

function resettingServer() {
  return new Promise((resolve) => {
    const server = net.createServer((socket) => {
      socket.once('data', () => socket.resetAndDestroy())
    })
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}
function closingServer() {
  return new Promise((resolve) => {
    const server = net.createServer((socket) => {
      socket.once('data', () => socket.end())
    })
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}
const stamp = () => new Date().toISOString()

async function main() {
  const reset = await resettingServer()
  const url = `postgresql://app@127.0.0.1:${reset.address().port}/app`
  const factory = new PrismaPg({ connectionString: url })
  let adapterError
  try {
    const adapter = await factory.connect()
    await adapter.queryRaw({ sql: 'SELECT 1', args: [], argTypes: [] })
  } catch (e) {
    adapterError = e
  }
  // What the client throws for it (client-engine-runtime user-facing-error.ts: ConnectionClosed ->
  // P1017; RequestHandler.ts adds modelName; production: no source context in the message).
  const message = '\nInvalid `prisma.user.findMany()` invocation:\n\n\nServer has closed the connection.'
  const known = new PrismaClientKnownRequestError(message, {
    code: 'P1017',
    clientVersion: '7.9.1',
    meta: { modelName: 'User', driverAdapterError: adapterError },
  })
  console.error(stamp(), 'prisma:error', known)
  // Prisma's own logger (log: ['error']): the tag and the message, no time
  console.log('prisma:error', message)
  // an interactive transaction with no connection in maxWait (transaction-manager-error.ts)
  const tx = new PrismaClientKnownRequestError(
    '\nInvalid `this.prisma.$transaction()` invocation in\n/srv/api/src/orders/orders.service.ts:41:30\n\n  38   async place(order: NewOrder) {\n  39     const items = await this.catalog.price(order)\n  40 \n→ 41     return this.prisma.$transaction(\nTransaction API error: Unable to start a transaction in the given time.',
    { code: 'P2028', clientVersion: '7.9.1', meta: { modelName: 'Order' } },
  )
  console.error(stamp(), 'prisma error', tx)
  await new Promise((r) => reset.close(r))

  // node-postgres alone: the server closes the session under a query
  const closing = await closingServer()
  const client = new pg.Client({ connectionString: `postgresql://app@127.0.0.1:${closing.address().port}/app` })
  try {
    await client.connect()
  } catch (e) {
    console.error(stamp(), 'query failed', e)
  }
  await new Promise((r) => closing.close(r))
  // and nobody listening
  const refused = new pg.Client({ connectionString: 'postgresql://app@127.0.0.1:1/app' })
  try {
    await refused.connect()
  } catch (e) {
    console.error(stamp(), 'query failed', e)
  }
}
main()
