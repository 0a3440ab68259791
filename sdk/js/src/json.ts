// A strict JSON reader for envelope claims and hop records, mirroring the gateway's (Rust,
// serde_json) rules exactly: RFC 8259 grammar only (no BOM, no NaN/Infinity, whitespace is
// space, tab, CR, LF), valid UTF-8, no lone surrogates, no duplicate object keys (compared
// after unescaping) at any depth, nesting limited to MAX_JSON_DEPTH (the top-level object is
// depth 1). Numbers are classified as serde_json does: an integer literal that fits in i64 is
// an integer; one that fits in u64 only is "integer outside i64"; anything else (a fraction, an
// exponent, -0, beyond u64) is a "non-integer number"; a number that overflows f64 is an error.

export const MAX_JSON_DEPTH = 32;

/** A JSON value as far as the envelope cares: strings and i64 integers are kept exactly. */
export type Val =
  | { t: "string"; v: string }
  | { t: "integer"; v: bigint }
  | { t: "other"; name: string };

export class JsonError extends Error {}

const I64_MIN = -(2n ** 63n);
const I64_MAX = 2n ** 63n - 1n;
const U64_MAX = 2n ** 64n - 1n;

// Sticky: matches at lastIndex without copying the rest of the text.
const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function clip(s: string): string {
  const chars = Array.from(s);
  return chars.length > 64 ? chars.slice(0, 64).join("") + "…" : s;
}

class Reader {
  i = 0;
  constructor(readonly s: string) {}

  fail(msg: string): never {
    throw new JsonError(`${msg} at offset ${this.i}`);
  }

  ws(): void {
    const s = this.s;
    while (this.i < s.length) {
      const c = s.charCodeAt(this.i);
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) this.i++;
      else break;
    }
  }

  value(depth: number): Val {
    this.ws();
    const c = this.s[this.i];
    switch (c) {
      case "{":
        this.object(depth, null);
        return { t: "other", name: "object" };
      case "[":
        this.array(depth);
        return { t: "other", name: "array" };
      case '"':
        return { t: "string", v: this.string() };
      case "t":
        this.literal("true");
        return { t: "other", name: "boolean" };
      case "f":
        this.literal("false");
        return { t: "other", name: "boolean" };
      case "n":
        this.literal("null");
        return { t: "other", name: "null" };
      case undefined:
        return this.fail("EOF while parsing a value");
      default:
        if (c === "-" || (c >= "0" && c <= "9")) return this.number();
        return this.fail("expected value");
    }
  }

  literal(word: string): void {
    if (this.s.startsWith(word, this.i)) this.i += word.length;
    else this.fail("expected value");
  }

  checkDepth(depth: number): void {
    if (depth > MAX_JSON_DEPTH) this.fail(`JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
  }

  /** Parses an object at `depth`; with `capture`, returns every member value (depth + 1). */
  object(depth: number, capture: Map<string, Val> | null): void {
    this.checkDepth(depth);
    this.i++; // {
    const seen = new Set<string>();
    this.ws();
    if (this.s[this.i] === "}") {
      this.i++;
      return;
    }
    for (;;) {
      this.ws();
      if (this.s[this.i] !== '"') this.fail("key must be a string");
      const key = this.string();
      if (seen.has(key)) this.fail(`duplicate key ${JSON.stringify(clip(key))}`);
      seen.add(key);
      this.ws();
      if (this.s[this.i] !== ":") this.fail("expected ':'");
      this.i++;
      const v = this.value(depth + 1);
      if (capture) capture.set(key, v);
      this.ws();
      const c = this.s[this.i];
      if (c === ",") {
        this.i++;
        continue;
      }
      if (c === "}") {
        this.i++;
        return;
      }
      this.fail("expected ',' or '}'");
    }
  }

  array(depth: number): void {
    this.checkDepth(depth);
    this.i++; // [
    this.ws();
    if (this.s[this.i] === "]") {
      this.i++;
      return;
    }
    for (;;) {
      this.value(depth + 1);
      this.ws();
      const c = this.s[this.i];
      if (c === ",") {
        this.i++;
        continue;
      }
      if (c === "]") {
        this.i++;
        return;
      }
      this.fail("expected ',' or ']'");
    }
  }

  hex4(): number {
    const h = this.s.slice(this.i, this.i + 4);
    if (!/^[0-9A-Fa-f]{4}$/.test(h)) this.fail("invalid \\u escape");
    this.i += 4;
    return parseInt(h, 16);
  }

  string(): string {
    const s = this.s;
    this.i++; // opening quote
    let out = "";
    let start = this.i;
    for (;;) {
      if (this.i >= s.length) this.fail("EOF while parsing a string");
      const c = s.charCodeAt(this.i);
      if (c === 0x22) {
        out += s.slice(start, this.i);
        this.i++;
        return out;
      }
      if (c < 0x20) this.fail("control character in string");
      if (c !== 0x5c) {
        this.i++;
        continue;
      }
      out += s.slice(start, this.i);
      this.i++; // backslash
      const e = s[this.i++];
      switch (e) {
        case '"':
          out += '"';
          break;
        case "\\":
          out += "\\";
          break;
        case "/":
          out += "/";
          break;
        case "b":
          out += "\b";
          break;
        case "f":
          out += "\f";
          break;
        case "n":
          out += "\n";
          break;
        case "r":
          out += "\r";
          break;
        case "t":
          out += "\t";
          break;
        case "u": {
          const u = this.hex4();
          if (u >= 0xdc00 && u <= 0xdfff) this.fail("lone trailing surrogate in hex escape");
          if (u >= 0xd800 && u <= 0xdbff) {
            if (s[this.i] !== "\\" || s[this.i + 1] !== "u") {
              this.fail("unexpected end of hex escape (lone leading surrogate)");
            }
            this.i += 2;
            const lo = this.hex4();
            if (lo < 0xdc00 || lo > 0xdfff) this.fail("lone leading surrogate in hex escape");
            out += String.fromCharCode(u, lo);
          } else {
            out += String.fromCharCode(u);
          }
          break;
        }
        default:
          this.i--;
          this.fail("invalid escape");
      }
      start = this.i;
    }
  }

  number(): Val {
    NUMBER.lastIndex = this.i;
    const m = NUMBER.exec(this.s);
    if (!m) return this.fail("invalid number");
    const text = m[0];
    this.i += text.length;
    const isInt = m[1] === undefined && m[2] === undefined;
    if (isInt) {
      const n = BigInt(text);
      if (text.startsWith("-")) {
        if (text === "-0") return { t: "other", name: "non-integer number" };
        if (n >= I64_MIN) return { t: "integer", v: n };
      } else {
        if (n <= I64_MAX) return { t: "integer", v: n };
        if (n <= U64_MAX) return { t: "other", name: "integer outside i64" };
      }
    }
    if (!Number.isFinite(Number(text))) this.fail("number out of range");
    return { t: "other", name: "non-integer number" };
  }
}

/**
 * Parses `bytes` as one JSON object (surrounding whitespace allowed) and returns its members
 * (each value at depth 2). Throws JsonError with the reason.
 */
export function parseObject(bytes: Uint8Array): Map<string, Val> {
  let text: string;
  try {
    text = decoder.decode(bytes);
  } catch {
    throw new JsonError("invalid UTF-8");
  }
  const r = new Reader(text);
  r.ws();
  const c = r.s[r.i];
  if (c !== "{") {
    if (c === undefined) r.fail("EOF while parsing a value");
    // Parse the value anyway so that a syntax error is reported as such.
    const v = r.value(1);
    throw new JsonError(
      `invalid type: ${v.t === "other" ? v.name : v.t}, expected a JSON object`,
    );
  }
  const members = new Map<string, Val>();
  r.object(1, members);
  r.ws();
  if (r.i !== r.s.length) r.fail("trailing characters");
  return members;
}
