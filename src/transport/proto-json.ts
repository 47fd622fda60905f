/**
 * The proto3 JSON mapping of the generated messages, as the REST routes speak it: field names in
 * lowerCamelCase (the proto names, snake_case, are accepted too), enums by name (or number),
 * uint32 as a number (or a numeric string). ts-proto's fromJSON converts whatever it is given; here
 * a request is checked first as a proto3 JSON parser would: an object, known fields only, each of
 * its JSON type. An answer is toJSON's output with the fields at their default values written out
 * too (like protojson's EmitUnpopulated), so a client reads `"faces": []` rather than nothing.
 */
import { InvalidArgumentError } from '../domain/errors.js';
import { quote } from '../domain/ids.js';
import type { MessageFns } from '../gen/facematch/v1/facematch.js';

const camel = (name: string): string => name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** The request message of a proto3 JSON object; InvalidArgumentError for what a proto3 JSON parser refuses. */
export function requestFromJson<T>(codec: MessageFns<T>, json: unknown): T {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new InvalidArgumentError('the request must be a JSON object');
  }
  const defaults = codec.fromPartial({} as Parameters<MessageFns<T>['fromPartial']>[0]) as Record<string, unknown>;
  for (const [key, value] of Object.entries(json)) {
    const field = camel(key);
    if (!Object.hasOwn(defaults, field)) throw new InvalidArgumentError(`unknown field ${quote(key)}`);
    if (value === null) continue;
    const kind = typeof defaults[field];
    // Strings are strings; numbers (uint32, enums) are numbers or strings (an enum's name, a number in quotes).
    const ok = kind === 'string' ? typeof value === 'string' : kind === 'number' ? typeof value === 'number' || typeof value === 'string' : true;
    if (!ok) throw new InvalidArgumentError(`field ${field} must be a JSON ${kind === 'string' ? 'string' : 'number or string'}`);
  }
  return codec.fromJSON(json);
}

/**
 * The proto3 JSON form of an answer, default values included. It is encoded and decoded first, so
 * that it holds exactly what a gRPC client reads (float fields at float32 precision).
 */
export function responseToJson<T>(codec: MessageFns<T>, message: T): unknown {
  const wire = codec.decode(codec.encode(message).finish());
  return withDefaults(wire, codec.toJSON(wire));
}

/** Fills in what toJSON left out because it was at its default value ("" / 0 / false / []). */
function withDefaults(message: unknown, json: unknown): unknown {
  if (typeof message !== 'object' || message === null || typeof json !== 'object' || json === null) return json;
  const out = json as Record<string, unknown>;
  for (const [key, value] of Object.entries(message)) {
    if (value === undefined) continue; // an absent message field stays absent
    if (!(key in out)) {
      out[key] = Array.isArray(value) ? [] : value;
    } else if (Array.isArray(value)) {
      const items = out[key] as unknown[];
      value.forEach((item, i) => withDefaults(item, items[i]));
    } else if (typeof value === 'object') {
      withDefaults(value, out[key]);
    }
  }
  return out;
}
