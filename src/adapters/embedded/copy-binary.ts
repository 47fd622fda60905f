/**
 * PostgreSQL's binary COPY format (https://www.postgresql.org/docs/current/sql-copy.html, "Binary
 * Format") for rows of text, integer and pgvector `vector` fields, to load vectors into PGlite
 * without their text form.
 *
 * Why: pgvector parses a vector's text ('[0.0123,...]', 512 decimal numbers) with strtof, which in
 * PGlite's WASM build was most of an upsert's cost: at 100k stored, 8-row INSERT statements of text
 * vectors wrote ~580 rows/s, binary COPY into a staging table and INSERT ... SELECT ~900 at the same
 * statement size (measured in /tmp experiments, then in bench/stores.bench.ts). The binary form of a
 * vector is pgvector's `vector_send`: int16 dimension, int16 unused (0), then the float4 values, all
 * big-endian; `vector_recv` checks the dimension, the unused field and that every value is finite.
 *
 * Hand-written (70 lines) rather than a package: the npm encoders of this format (pg-copy-streams-
 * binary) are Node stream transforms for node-postgres connections and know no pgvector type.
 */

/** A field: text, a 32-bit integer, a float32 vector, or NULL. */
export type CopyField = string | number | Float32Array | null;

const SIGNATURE = [0x50, 0x47, 0x43, 0x4f, 0x50, 0x59, 0x0a, 0xff, 0x0d, 0x0a, 0x00]; // PGCOPY\n\377\r\n\0
const encoder = new TextEncoder();

/** The COPY ... (FORMAT binary) stream of `rows`; every row has the same fields, in the table's column order. */
export function encodeCopyBinary(rows: readonly (readonly CopyField[])[]): Uint8Array<ArrayBuffer> {
  const texts = new Map<string, Uint8Array>();
  const text = (s: string): Uint8Array => {
    let bytes = texts.get(s);
    if (!bytes) texts.set(s, (bytes = encoder.encode(s)));
    return bytes;
  };
  // Sizes first: one allocation.
  let size = SIGNATURE.length + 4 + 4 + 2;
  for (const row of rows) {
    size += 2;
    for (const field of row) {
      size += 4;
      if (typeof field === 'string') size += text(field).length;
      else if (typeof field === 'number') size += 4;
      else if (field !== null) size += 4 + 4 * field.length;
    }
  }
  const buffer = new ArrayBuffer(size);
  const bytes = new Uint8Array(buffer);
  const view = new DataView(buffer);
  bytes.set(SIGNATURE, 0);
  let at = SIGNATURE.length + 8; // flags and header extension length: 0
  for (const row of rows) {
    view.setInt16(at, row.length);
    at += 2;
    for (const field of row) {
      if (field === null) {
        view.setInt32(at, -1);
        at += 4;
      } else if (typeof field === 'string') {
        const b = text(field);
        view.setInt32(at, b.length);
        bytes.set(b, at + 4);
        at += 4 + b.length;
      } else if (typeof field === 'number') {
        if (!Number.isInteger(field) || field < -0x80000000 || field > 0x7fffffff) throw new RangeError(`not a 32-bit integer: ${field}`);
        view.setInt32(at, 4);
        view.setInt32(at + 4, field);
        at += 8;
      } else {
        if (field.length > 0x7fff) throw new RangeError(`a vector has at most 32767 dimensions, got ${field.length}`);
        view.setInt32(at, 4 + 4 * field.length);
        view.setInt16(at + 4, field.length);
        view.setInt16(at + 6, 0);
        at += 8;
        for (let i = 0; i < field.length; i++, at += 4) view.setFloat32(at, field[i]!);
      }
    }
  }
  view.setInt16(at, -1);
  return bytes;
}
