// What a Node app on Prisma 6 (Rust query engine) logs: the engine's messages as
// libs/user-facing-errors writes them, thrown as the client's error classes and printed by
// console.error; the engine's own `prisma:error` lines via prisma.$on('error') and log: ['error'].
const { PrismaClientKnownRequestError, PrismaClientInitializationError } = require('@prisma/client-runtime-utils')
const stamp = () => new Date().toISOString()
const v = '6.16.2'

const p2024 = new PrismaClientKnownRequestError(
  '\nInvalid `prisma.message.findMany()` invocation:\n\n\nTimed out fetching a new connection from the connection pool. More info: http://pris.ly/d/connection-pool (Current connection pool timeout: 10, connection limit: 5)',
  { code: 'P2024', clientVersion: v, meta: { modelName: 'Message', connection_limit: 5, timeout: 10 } },
)
console.error(stamp(), 'prisma:error', p2024)
// prisma.$on('error', (e) => console.error(e.timestamp.toISOString(), 'prisma:error', e.message))
console.error(stamp(), 'prisma:error', 'Error in PostgreSQL connection: Error { kind: Closed, cause: None }')
const p1017 = new PrismaClientKnownRequestError(
  '\nInvalid `this.prisma.instance.findUnique()` invocation in\n/evolution/dist/api/services/channel.service.js:412:52\n\n  409   public async loadInstance() {\n  410     try {\n  411 \n→ 412     const instance = await this.prisma.instance.findUnique(\nServer has closed the connection.',
  { code: 'P1017', clientVersion: v, meta: { modelName: 'Instance' } },
)
console.error(stamp(), 'prisma error', p1017)
const p1001 = new PrismaClientInitializationError(
  "Can't reach database server at `postgres`:`5432`\n\nPlease make sure your database server is running at `postgres`:`5432`.",
  v,
  'P1001',
)
console.error(stamp(), 'prisma:error', p1001)
// log: ['error'] on a bare stdout: Prisma's own line, no time
console.log('prisma:error', 'Error in PostgreSQL connection: Error { kind: Closed, cause: None }')
