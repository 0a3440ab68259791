/**
 * OpenTelemetry helpers: carry a `tg1` envelope in W3C Baggage, onto spans and through queue
 * message headers. Needs `@opentelemetry/api` (a peer dependency); `EnvelopeSpanProcessor`
 * plugs into any `@opentelemetry/sdk-trace-*` provider (it only uses the SpanProcessor shape).
 *
 * - `setEnvelope` / `getEnvelope` put the token in / read it from Baggage under
 *   `tollgate.envelope`; `removeEnvelope` strips it (for calls to third parties).
 * - `EnvelopeSpanProcessor` copies the Baggage token onto every span started in that context
 *   as the span attribute `tollgate.envelope` (the attribute the gateway verifies).
 * - `injectHeaders` / `extractHeaders` / `contextFromHeaders` move the token through a queue
 *   message under the header `tollgate-envelope` (next to `traceparent`).
 *
 * Baggage rides on every outbound call. The token is integrity-protected, not confidential:
 * strip it on calls that leave your system.
 */

import { context as otelContext, propagation, type Context } from "@opentelemetry/api";

import { parse } from "./index.js";

export const BAGGAGE_KEY = "tollgate.envelope";
export const SPAN_ATTRIBUTE = "tollgate.envelope";
export const HEADER = "tollgate-envelope";

/**
 * A Context (derived from `ctx`, default the active one) whose Baggage carries `token` under
 * `tollgate.envelope`. The token must parse (throws `MalformedError`); it is not verified.
 * Run code in it with `context.with(setEnvelope(token), fn)`.
 */
export function setEnvelope(token: string, ctx: Context = otelContext.active()): Context {
  parse(token); // refuse to propagate garbage
  const bag = propagation.getBaggage(ctx) ?? propagation.createBaggage();
  return propagation.setBaggage(ctx, bag.setEntry(BAGGAGE_KEY, { value: token }));
}

/** The envelope in `ctx`'s (default the active) Baggage, if any. */
export function getEnvelope(ctx: Context = otelContext.active()): string | undefined {
  const value = propagation.getBaggage(ctx)?.getEntry(BAGGAGE_KEY)?.value;
  return typeof value === "string" && value !== "" ? value : undefined;
}

/** `ctx` (default the active one) without the envelope in its Baggage: for third-party calls. */
export function removeEnvelope(ctx: Context = otelContext.active()): Context {
  const bag = propagation.getBaggage(ctx);
  if (!bag || bag.getEntry(BAGGAGE_KEY) === undefined) return ctx;
  const rest = bag.removeEntry(BAGGAGE_KEY);
  return rest.getAllEntries().length === 0 ? propagation.deleteBaggage(ctx) : propagation.setBaggage(ctx, rest);
}

/** A writable message-header carrier: a plain object, or anything with `set(name, value)` (Map, Headers). */
export type HeaderSink = Record<string, unknown> | { set(name: string, value: string): unknown };

/**
 * Sets the `tollgate-envelope` header on a queue message's headers. Without `token` the
 * envelope is taken from `ctx`'s (default the active) Baggage; when there is none the carrier
 * is left untouched. Returns the carrier.
 */
export function injectHeaders<T extends HeaderSink>(carrier: T, token?: string, ctx?: Context): T {
  const t = token ?? getEnvelope(ctx ?? otelContext.active());
  if (!t) return carrier;
  const setter = (carrier as { set?: unknown }).set;
  if (typeof setter === "function" && !isPlainObject(carrier)) {
    (carrier as { set(name: string, value: string): unknown }).set(HEADER, t);
  } else {
    (carrier as Record<string, unknown>)[HEADER] = t;
  }
  return carrier;
}

function isPlainObject(v: unknown): boolean {
  if (v === null || typeof v !== "object") return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function asString(value: unknown): string | undefined {
  if (Array.isArray(value)) value = value.length > 0 ? value[0] : undefined;
  if (value instanceof Uint8Array) {
    // Tokens are ASCII; anything else is not an envelope.
    if (value.some((b) => b > 0x7f)) return undefined;
    value = Buffer.from(value).toString("latin1");
  }
  return typeof value === "string" && value !== "" ? value : undefined;
}

function headerName(name: unknown): string | undefined {
  if (typeof name === "string") return name;
  if (name instanceof Uint8Array) return Buffer.from(name).toString("latin1");
  return undefined;
}

/**
 * A readable message-header carrier: a plain object (`{ "tollgate-envelope": token }`, as
 * BullMQ job data, SQS/AMQP/NATS headers or Node's `IncomingHttpHeaders`), a `Map`, a fetch
 * `Headers`, or an array of `[name, value]` pairs or `{ key, value }` records (Kafka clients).
 * Values may be strings, Buffers/Uint8Arrays or arrays of them.
 */
export type HeaderSource =
  | Record<string, unknown>
  | Map<unknown, unknown>
  | { get(name: string): unknown; forEach(cb: (value: unknown, name: string) => void): void }
  | Iterable<readonly [unknown, unknown]>
  | Iterable<{ key: unknown; value: unknown }>;

/**
 * The `tollgate-envelope` header of a queue message (name compared case-insensitively).
 * Returns the raw token, unverified, or undefined.
 */
export function extractHeaders(carrier: HeaderSource | null | undefined): string | undefined {
  if (carrier === null || carrier === undefined) return undefined;
  const entries: [unknown, unknown][] = [];
  if (carrier instanceof Map) {
    for (const [k, v] of carrier) entries.push([k, v]);
  } else if (Array.isArray(carrier) || (!isPlainObject(carrier) && Symbol.iterator in Object(carrier) && typeof (carrier as { get?: unknown }).get !== "function")) {
    for (const item of carrier as Iterable<unknown>) {
      if (Array.isArray(item)) entries.push([item[0], item[1]]);
      else if (item && typeof item === "object" && "key" in item) {
        const rec = item as { key: unknown; value: unknown };
        entries.push([rec.key, rec.value]);
      }
    }
  } else if (!isPlainObject(carrier) && typeof (carrier as { forEach?: unknown }).forEach === "function") {
    (carrier as { forEach(cb: (value: unknown, name: string) => void): void }).forEach((v, k) => entries.push([k, v]));
  } else {
    for (const [k, v] of Object.entries(carrier as Record<string, unknown>)) entries.push([k, v]);
  }
  for (const [name, value] of entries) {
    if (headerName(name)?.toLowerCase() === HEADER) return asString(value);
  }
  return undefined;
}

/**
 * A Context whose Baggage carries the message's envelope (for a consumer that resumes the
 * work). Returns `ctx` (default the active one) unchanged when there is no header. Throws
 * `MalformedError` when the header does not parse.
 */
export function contextFromHeaders(carrier: HeaderSource | null | undefined, ctx: Context = otelContext.active()): Context {
  const token = extractHeaders(carrier);
  return token === undefined ? ctx : setEnvelope(token, ctx);
}

/** The part of an SDK span the processor touches. */
export interface SpanLike {
  readonly attributes?: Readonly<Record<string, unknown>>;
  setAttribute(key: string, value: string): unknown;
}

/**
 * A SpanProcessor: on span start, copies the Baggage envelope (from the span's parent context)
 * onto the span as `tollgate.envelope`. A token already set on the span wins. `fallbackToken`
 * is used when Baggage has none (a single-tenant worker). Register it before the exporting
 * processor: `new NodeTracerProvider({ spanProcessors: [new EnvelopeSpanProcessor(), batch] })`.
 */
export class EnvelopeSpanProcessor {
  private readonly fallback: string | undefined;

  constructor(options: { fallbackToken?: string } = {}) {
    if (options.fallbackToken !== undefined) parse(options.fallbackToken);
    this.fallback = options.fallbackToken;
  }

  onStart(span: SpanLike, parentContext: Context): void {
    if (span.attributes && Object.prototype.hasOwnProperty.call(span.attributes, SPAN_ATTRIBUTE)) return;
    const token = getEnvelope(parentContext ?? otelContext.active()) ?? this.fallback;
    if (token) span.setAttribute(SPAN_ATTRIBUTE, token);
  }

  onEnd(_span: unknown): void {}

  forceFlush(): Promise<void> {
    return Promise.resolve();
  }

  shutdown(): Promise<void> {
    return Promise.resolve();
  }
}
