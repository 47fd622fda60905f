/**
 * Versioned SQL migrations, shared by the embedded database (PGlite) and the PostgreSQL match store:
 * the same files, the same `schema_migrations` table (scope, version, checksum), the same rules.
 *
 * - Files are `NNNN_name.sql`, applied in order, each in its own transaction with its record.
 * - An applied migration must not change: its sha256 is recorded and compared on every start.
 * - A database that records a migration this code does not know (written by a newer version) is
 *   refused rather than used.
 *
 * Callers serialise runs themselves: PGlite has one connection; PostgreSQL holds an advisory lock.
 */
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError } from '../../domain/errors.js';

/**
 * Migrations of the relational schema (photos, faces, matches): the folder beside this module, in
 * src/ from source and in dist/ built (`npm run build` copies the .sql files there: scripts/build.mjs),
 * so the package runs without src/.
 */
export const MATCH_MIGRATIONS_DIR = path.join(import.meta.dirname, 'migrations');

const MIGRATION_FILE = /^(\d{4})_[a-z0-9_]+\.sql$/;

export interface Migration {
  /** File name without `.sql`, e.g. `0001_photos_faces_matches`. */
  version: string;
  /** With placeholders substituted. */
  sql: string;
  /** sha256 of the file as written (before substitution): an applied migration must not change. */
  checksum: string;
}

/** Reads `NNNN_name.sql` files of a folder in version order, substituting `{{NAME}}` placeholders. */
export async function readMigrations(folder: string, vars: Readonly<Record<string, string>> = {}): Promise<Migration[]> {
  let names: string[];
  try {
    names = (await readdir(folder)).filter((n) => n.endsWith('.sql')).sort();
  } catch (error) {
    throw new ConfigError(`cannot read migrations in ${folder}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  const seen = new Set<string>();
  const migrations: Migration[] = [];
  for (const name of names) {
    const number = MIGRATION_FILE.exec(name)?.[1];
    if (number === undefined) throw new ConfigError(`migration ${path.join(folder, name)}: name must look like 0001_name.sql`);
    if (seen.has(number)) throw new ConfigError(`migrations in ${folder}: two files numbered ${number}`);
    seen.add(number);
    // LF line ends: a checkout with CRLF is the same migration.
    const text = (await readFile(path.join(folder, name), 'utf8')).replace(/\r\n/g, '\n');
    const sql = text.replace(/\{\{([A-Z_]+)\}\}/g, (_, key: string) => {
      const value = vars[key];
      if (value === undefined) throw new ConfigError(`migration ${name}: no value for {{${key}}}`);
      return value;
    });
    migrations.push({ version: name.slice(0, -4), sql, checksum: createHash('sha256').update(text).digest('hex') });
  }
  return migrations;
}

/** What a transaction callback gets: statements run inside the transaction, in order. */
export interface SqlTransaction {
  query<T>(sql: string, params?: unknown[]): Promise<T[]>;
  /** Runs a script of several statements (no parameters). */
  exec(sql: string): Promise<void>;
}

/** The little a migration run needs of a database connection. */
export interface MigrationTarget {
  query<T>(sql: string, params?: unknown[]): Promise<T[]>;
  transaction<T>(fn: (tx: SqlTransaction) => Promise<T>): Promise<T>;
}

/**
 * Applies the migrations not yet recorded for `scope` in `schema_migrations`, in order, each in its
 * own transaction with its record; returns the versions applied. `where` names the database in
 * error messages (`embedded database at /data/db`, `PostgreSQL at host:5432/db`).
 */
export async function applyMigrations(db: MigrationTarget, scope: string, migrations: readonly Migration[], where: string): Promise<string[]> {
  await db.query(
    `CREATE TABLE IF NOT EXISTS schema_migrations (
       scope text NOT NULL,
       version text NOT NULL,
       checksum text NOT NULL,
       applied_at timestamptz NOT NULL DEFAULT now(),
       PRIMARY KEY (scope, version))`,
  );
  const known = new Set(migrations.map((m) => m.version));
  const recorded = await db.query<{ version: string }>('SELECT version FROM schema_migrations WHERE scope = $1', [scope]);
  const unknown = recorded.map((r) => r.version).filter((v) => !known.has(v));
  if (unknown.length > 0) {
    throw new ConfigError(`${where}: ${scope} migration ${unknown.join(', ')} is not known to this version (written by a newer one?)`);
  }
  const applied: string[] = [];
  for (const m of migrations) {
    const done = await db.transaction(async (tx) => {
      const [row] = await tx.query<{ checksum: string }>('SELECT checksum FROM schema_migrations WHERE scope = $1 AND version = $2', [scope, m.version]);
      if (row) {
        if (row.checksum !== m.checksum) throw new ConfigError(`${where}: ${scope} migration ${m.version} was changed after it was applied`);
        return false;
      }
      await tx.exec(m.sql);
      await tx.query('INSERT INTO schema_migrations (scope, version, checksum) VALUES ($1, $2, $3)', [scope, m.version, m.checksum]);
      return true;
    });
    if (done) applied.push(m.version);
  }
  return applied;
}
