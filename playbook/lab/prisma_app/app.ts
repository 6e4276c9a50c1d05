// A Prisma 7 service for the lab: PrismaClient over @prisma/adapter-pg (node-postgres' pg.Pool),
// serving "requests" from a few concurrent workers until SIGTERM, logging like a real Node app.
//
// Errors are logged with console.error(timestamp line, error): Node prints the Prisma error object
// over many lines (message, stack, then `code`, `meta`, `clientVersion`…), so one record spans
// lines and only its first line carries the time. Everything is configured by environment
// (playbook/lab/prisma.py sets it); the password comes from PGPASSFILE, never from the URL.
import { readFileSync, renameSync, writeFileSync } from "node:fs";
import pg from "pg";
import { PrismaPg } from "@prisma/adapter-pg";
import { PrismaClient } from "./generated/prisma/client.ts";

function env(name: string, fallback: string): string {
  const value = process.env[name];
  return value === undefined || value === "" ? fallback : value;
}
const num = (name: string, fallback: number): number => Number(env(name, String(fallback)));

const service = env("SERVICE", "orders");
const url = env("DATABASE_URL", "");
const workers = num("WORKERS", 2);
const poolMax = num("POOL_MAX", 4);
const connectTimeoutMs = num("POOL_TIMEOUT_MS", 0); // pg.Pool's connectionTimeoutMillis; 0: wait forever
const idleTimeoutMs = num("IDLE_TIMEOUT_MS", 10000); // pg.Pool's default
const requestIntervalMs = num("REQUEST_INTERVAL_MS", 50);
const burstMs = num("BURST_MS", 0); // 0: steady traffic
const idleGapMs = num("IDLE_GAP_MS", 0);
const holdMs = num("HOLD_MS", 0); // pg_sleep inside each request: how long a connection stays busy
const txEvery = num("TRANSACTION_EVERY", 0); // every Nth request is an interactive transaction (0: none)
const txMaxWaitMs = num("TX_MAX_WAIT_MS", 2000); // Prisma's default maxWait
const statusFile = env("STATUS_FILE", "");

const ts = (): string => new Date().toISOString();
const info = (message: string): void => console.log(`${ts()} INFO ${service}: ${message}`);

// The password the passfile holds for this host, port, database and user (libpq's rules: `*`
// matches anything, `\` escapes), read once: pg's own pgpass fallback is deprecated.
const target = new URL(url);
const host = target.hostname;
const port = Number(target.port || "5432");
const database = decodeURIComponent(target.pathname.slice(1));
const user = decodeURIComponent(target.username);

function passfilePassword(): string | undefined {
  const file = process.env.PGPASSFILE;
  if (!file) return undefined;
  const wanted = [host, String(port), database, user];
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const parts = [""];
    for (let i = 0; i < line.length; i++) {
      if (line[i] === "\\" && i + 1 < line.length) parts[parts.length - 1] += line[++i];
      else if (line[i] === ":" && parts.length < 5) parts.push("");
      else parts[parts.length - 1] += line[i];
    }
    if (parts.length === 5 && wanted.every((value, i) => parts[i] === "*" || parts[i] === value)) return parts[4];
  }
  return undefined;
}

// The URL's parts rather than connectionString: pg lets a connection string's (absent) password
// override the one given beside it.
const pool = new pg.Pool({
  host,
  port,
  database,
  user,
  password: passfilePassword(),
  max: poolMax,
  connectionTimeoutMillis: connectTimeoutMs,
  idleTimeoutMillis: idleTimeoutMs,
  application_name: service,
});
const adapter = new PrismaPg(pool, {
  // what a careful app logs; most apps set nothing, and the idle client is replaced silently
  onPoolError: (err) => console.warn(`${ts()} WARN ${service}: idle pool client error: ${err.message}`),
});
const prisma = new PrismaClient({ adapter });

let ok = 0;
let failed = 0;
let stopping = false;
const started = Date.now();

function writeStatus(): void {
  if (!statusFile) return;
  const status = {
    ts: ts(),
    service,
    requests_ok: ok,
    requests_failed: failed,
    pool_total: pool.totalCount,
    pool_idle: pool.idleCount,
    pool_waiting: pool.waitingCount,
  };
  writeFileSync(`${statusFile}.tmp`, JSON.stringify(status));
  renameSync(`${statusFile}.tmp`, statusFile); // readers never see half a file
}

function untilNextBurst(): number {
  if (burstMs <= 0) return 0;
  const period = burstMs + idleGapMs;
  const phase = (Date.now() - started) % period;
  return phase < burstMs ? 0 : period - phase;
}

const pause = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function request(n: number): Promise<void> {
  const seconds = holdMs / 1000;
  if (txEvery > 0 && n % txEvery === 0) {
    await prisma.$transaction(
      async (tx) => {
        await tx.$queryRaw`SELECT 1 AS ok FROM pg_sleep(${seconds})`;
        await tx.order.count();
      },
      { maxWait: txMaxWaitMs, timeout: holdMs + 5000 },
    );
  } else if (holdMs > 0) {
    await prisma.$queryRaw`SELECT 1 AS ok FROM pg_sleep(${seconds})`;
  } else {
    await prisma.order.findMany({ take: 5, orderBy: { id: "desc" } });
  }
}

async function worker(id: number): Promise<void> {
  let n = id;
  while (!stopping) {
    const wait = untilNextBurst();
    if (wait > 0) {
      await pause(wait);
      continue;
    }
    n += workers;
    try {
      await request(n);
      ok += 1;
    } catch (err) {
      // The log line first, the count after: whoever waits on the count finds the record written.
      console.error(`${ts()} ERROR ${service}: request failed`, err);
      failed += 1;
    }
    await pause(requestIntervalMs);
  }
}

async function main(): Promise<void> {
  await prisma.$connect();
  await prisma.order.count(); // fails fast, and loudly, when the table or the server is missing
  info(`service started: pg.Pool max=${poolMax} connectionTimeoutMillis=${connectTimeoutMs} idleTimeoutMillis=${idleTimeoutMs}`);
  const ticker = setInterval(writeStatus, 250);
  writeStatus();
  const stop = new Promise<void>((resolve) => {
    const end = (): void => {
      stopping = true;
      resolve();
    };
    process.once("SIGTERM", end);
    process.once("SIGINT", end);
  });
  const running = Array.from({ length: workers }, (_, id) => worker(id));
  await stop;
  // Requests stuck on a flow a hop forgot never settle: after a grace period they are abandoned,
  // as a process manager's kill would abandon them.
  const settled = await Promise.race([
    Promise.allSettled(running).then(() => true),
    pause(3000).then(() => false),
  ]);
  clearInterval(ticker);
  writeStatus();
  const abandoned = settled ? "" : " (requests still waiting on the database were abandoned)";
  info(`service stopped: requests_ok=${ok} requests_failed=${failed}${abandoned}`);
  if (settled) {
    await prisma.$disconnect();
    await pool.end(); // the adapter leaves an external pool open: its idle clients would keep Node alive
  }
  process.exit(0);
}

main().catch((err) => {
  console.error(`${ts()} ERROR ${service}: could not start`, err);
  process.exit(1);
});
