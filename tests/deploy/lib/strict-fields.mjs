// Unknown-field detection for Kubernetes objects.
//
// kubernetes-models' validate() checks types, enums and required fields, but
// its schemas (like the Kubernetes OpenAPI ones) allow any extra property, so
// a typo such as `readOnlyRootFileSystem` would pass. A real API server with
// field validation "Strict" (kubectl's default) refuses such a field. The
// packages carry the full field list of every type in their TypeScript
// declarations (*.d.ts, generated from the same OpenAPI/CRD schemas), so this
// module reads those declarations and walks an object against them.
//
// The declarations are machine-generated and regular: `import {A} from "x"`,
// `export interface IName { "field"?: Type; [key: string]: Type; }`,
// `export declare type IName = Type;` and `export { IName as IAlias }`. Types
// are unions of primitives, string literals, `Array<T>`, inline object types
// and references to other interfaces. Anything else is treated as "open"
// (not checked), so a declaration this parser misunderstands can only make
// the check weaker, never report a field that the type has.

import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

const HERE = fileURLToPath(import.meta.url);

const OPEN = { t: "open" };

function tokenize(src) {
  const toks = [];
  let i = 0;
  const n = src.length;
  while (i < n) {
    const c = src[i];
    if (c === "/" && src[i + 1] === "*") {
      const e = src.indexOf("*/", i + 2);
      i = e < 0 ? n : e + 2;
    } else if (c === "/" && src[i + 1] === "/") {
      const e = src.indexOf("\n", i);
      i = e < 0 ? n : e + 1;
    } else if (/\s/.test(c)) {
      i++;
    } else if (c === '"' || c === "'") {
      let j = i + 1;
      let s = "";
      while (j < n && src[j] !== c) {
        if (src[j] === "\\") j++;
        s += src[j];
        j++;
      }
      toks.push({ k: "str", v: s });
      i = j + 1;
    } else if (/[A-Za-z_$]/.test(c)) {
      let j = i;
      while (j < n && /[A-Za-z0-9_$]/.test(src[j])) j++;
      toks.push({ k: "id", v: src.slice(i, j) });
      i = j;
    } else if (/[0-9-]/.test(c)) {
      let j = i + 1;
      while (j < n && /[0-9.eE]/.test(src[j])) j++;
      toks.push({ k: "num", v: src.slice(i, j) });
      i = j;
    } else {
      toks.push({ k: "p", v: c });
      i++;
    }
  }
  return toks;
}

class Parser {
  constructor(toks) {
    this.toks = toks;
    this.i = 0;
  }
  peek(o = 0) {
    return this.toks[this.i + o];
  }
  next() {
    return this.toks[this.i++];
  }
  is(v, o = 0) {
    const t = this.peek(o);
    return t !== undefined && (t.k === "p" || t.k === "id") && t.v === v;
  }
  eat(v) {
    if (this.is(v)) {
      this.i++;
      return true;
    }
    return false;
  }
  expect(v) {
    if (!this.eat(v)) {
      const t = this.peek();
      throw new Error(`expected '${v}', got ${t ? t.v : "end"}`);
    }
  }
  // Skips a balanced (), [], {} or <> group starting at the current token.
  skipGroup() {
    const open = this.next().v;
    const close = { "(": ")", "[": "]", "{": "}", "<": ">" }[open];
    let depth = 1;
    while (depth > 0 && this.i < this.toks.length) {
      const t = this.next();
      if (t.k !== "p") continue;
      if (t.v === open) depth++;
      else if (t.v === close) depth--;
    }
  }
  // Skips to the end of the current statement (';' or a balanced '{...}').
  skipStatement() {
    while (this.i < this.toks.length) {
      const t = this.peek();
      if (t.k === "p" && t.v === ";") {
        this.i++;
        return;
      }
      if (t.k === "p" && "{([".includes(t.v)) {
        const wasBrace = t.v === "{";
        this.skipGroup();
        if (wasBrace && !this.is(";") && !this.is("|") && !this.is("&")) return;
        continue;
      }
      this.i++;
    }
  }

  parseType() {
    const alts = [this.parsePostfix()];
    while (this.eat("|")) alts.push(this.parsePostfix());
    if (this.is("&")) {
      // Intersections do not occur in the generated models; give up on them.
      while (this.eat("&")) this.parsePostfix();
      return OPEN;
    }
    return alts.length === 1 ? alts[0] : { t: "union", alts };
  }
  parsePostfix() {
    let ty = this.parsePrimary();
    for (;;) {
      if (this.is("[") && this.is("]", 1)) {
        this.i += 2;
        ty = { t: "array", of: ty };
      } else if (this.is("[")) {
        // Indexed access such as IDeployment["kind"]: a primitive in practice.
        this.skipGroup();
        ty = OPEN;
      } else {
        return ty;
      }
    }
  }
  parsePrimary() {
    const t = this.peek();
    if (!t) throw new Error("unexpected end of type");
    if (t.k === "str" || t.k === "num") {
      this.i++;
      return { t: "prim" };
    }
    if (this.is("(")) {
      this.i++;
      const ty = this.parseType();
      this.expect(")");
      return ty;
    }
    if (this.is("{")) return this.parseObject();
    if (t.k === "id") {
      this.i++;
      if (["string", "number", "boolean", "null", "undefined", "true", "false", "bigint"].includes(t.v))
        return { t: "prim" };
      if (["any", "unknown", "object", "never", "void"].includes(t.v)) return OPEN;
      if (t.v === "Array" || t.v === "ReadonlyArray") {
        this.expect("<");
        const of = this.parseType();
        this.expect(">");
        return { t: "array", of };
      }
      if (t.v === "Record") {
        this.expect("<");
        this.parseType();
        this.expect(",");
        const v = this.parseType();
        this.expect(">");
        return { t: "object", props: new Map(), index: v };
      }
      let name = t.v;
      while (this.is(".") && this.peek(1)?.k === "id") {
        this.i++;
        name += "." + this.next().v;
      }
      if (this.is("<")) {
        this.skipGroup();
        return OPEN;
      }
      return { t: "ref", name };
    }
    throw new Error(`unexpected token '${t.v}' in a type`);
  }
  parseObject() {
    this.expect("{");
    const props = new Map();
    let index = null;
    while (!this.is("}")) {
      if (this.peek() === undefined) throw new Error("unterminated object type");
      if (this.eat("readonly") && (this.is(":") || this.is("?"))) this.i--; // a field named readonly
      if (this.is("[")) {
        // [key: string]: T
        this.i++;
        this.next();
        this.expect(":");
        this.parseType();
        this.expect("]");
        this.expect(":");
        index = this.parseType();
      } else {
        const key = this.next();
        if (key.k !== "str" && key.k !== "id") throw new Error(`unexpected '${key.v}' in an object type`);
        if (this.is("(") || this.is("<")) {
          // A method signature: not data.
          while (!this.is(";") && !this.is("}")) {
            if (this.is("(") || this.is("{") || this.is("<") || this.is("[")) this.skipGroup();
            else this.i++;
          }
        } else {
          this.eat("?");
          this.expect(":");
          props.set(key.v, this.parseType());
        }
      }
      if (!this.eat(";")) this.eat(",");
    }
    this.expect("}");
    return { t: "object", props, index };
  }
}

// One parsed .d.ts file: its imports and its local declarations.
function parseDts(file) {
  const p = new Parser(tokenize(fs.readFileSync(file, "utf8")));
  const imports = new Map(); // local name -> {from, name}
  const decls = new Map(); // local name -> type
  const aliases = new Map(); // exported alias -> local name
  const reexports = []; // export * from "x"
  while (p.i < p.toks.length) {
    try {
      if (p.eat("import")) {
        if (p.eat("type")) {
          /* import type {..} */
        }
        if (p.is("{")) {
          p.i++;
          const names = [];
          while (!p.is("}")) {
            const a = p.next().v;
            let b = a;
            if (p.eat("as")) b = p.next().v;
            names.push([a, b]);
            p.eat(",");
          }
          p.expect("}");
          p.expect("from");
          const from = p.next().v;
          for (const [a, b] of names) imports.set(b, { from, name: a });
          p.eat(";");
        } else {
          p.skipStatement();
        }
        continue;
      }
      if (p.eat("export")) {
        p.eat("declare");
        if (p.eat("interface")) {
          const name = p.next().v;
          if (p.is("<")) p.skipGroup();
          const bases = [];
          if (p.eat("extends")) {
            do {
              bases.push(p.next().v);
              if (p.is("<")) p.skipGroup();
            } while (p.eat(","));
          }
          const obj = p.parseObject();
          obj.bases = bases;
          decls.set(name, obj);
          continue;
        }
        if (p.eat("type")) {
          const name = p.next().v;
          if (p.is("<")) p.skipGroup();
          p.expect("=");
          decls.set(name, p.parseType());
          p.eat(";");
          continue;
        }
        if (p.is("{")) {
          p.i++;
          while (!p.is("}")) {
            const a = p.next().v;
            let b = a;
            if (p.eat("as")) b = p.next().v;
            aliases.set(b, a);
            p.eat(",");
          }
          p.expect("}");
          if (p.eat("from")) {
            const from = p.next().v;
            for (const [b, a] of aliases) if (!decls.has(a)) imports.set(b, { from, name: a });
          }
          p.eat(";");
          continue;
        }
        if (p.is("*")) {
          p.i++;
          if (p.eat("as")) p.next();
          p.expect("from");
          reexports.push(p.next().v);
          p.eat(";");
          continue;
        }
      }
      p.skipStatement();
    } catch {
      // Be lenient: skip what we do not understand.
      p.skipStatement();
    }
  }
  return { file, imports, decls, aliases, reexports };
}

function resolveModule(spec, fromFile) {
  let base;
  if (spec.startsWith(".")) {
    base = path.resolve(path.dirname(fromFile), spec);
  } else {
    // Resolve the runtime file through the package's exports, then take the
    // declaration file beside it.
    const r = createRequire(fromFile);
    const js = r.resolve(spec);
    base = js.replace(/\.(c|m)?js$/, "");
  }
  for (const cand of [base + ".d.ts", path.join(base, "index.d.ts")]) {
    if (fs.existsSync(cand)) return cand;
  }
  return null;
}

export class FieldChecker {
  constructor() {
    this.files = new Map();
  }
  file(f) {
    let m = this.files.get(f);
    if (!m) {
      m = parseDts(f);
      this.files.set(f, m);
    }
    return m;
  }
  // Returns {type, mod} for a name as seen from module `mod`, following
  // imports, export aliases, type aliases and re-exports.
  lookup(mod, name, depth = 0) {
    if (depth > 20) return null;
    if (mod.decls.has(name)) return { type: mod.decls.get(name), mod };
    if (mod.aliases.has(name) && mod.aliases.get(name) !== name) return this.lookup(mod, mod.aliases.get(name), depth + 1);
    const imp = mod.imports.get(name);
    if (imp) {
      const f = resolveModule(imp.from, mod.file);
      if (!f) return null;
      return this.lookup(this.file(f), imp.name, depth + 1);
    }
    for (const spec of mod.reexports) {
      const f = resolveModule(spec, mod.file);
      if (!f) continue;
      const r = this.lookup(this.file(f), name, depth + 1);
      if (r) return r;
    }
    return null;
  }
  // The interface of a model class: e.g. ("kubernetes-models/apps/v1/Deployment", "Deployment").
  rootFor(moduleSpec, kind) {
    const f = resolveModule(moduleSpec, HERE);
    if (!f) return null;
    const mod = this.file(f);
    const r = this.lookup(mod, "I" + kind);
    return r;
  }

  // Walks `value` against the type; returns a list of {path, msg}, `path`
  // being an array of keys and indices.
  check(value, root) {
    const errors = [];
    this.walk(value, root.type, root.mod, [], errors, 0);
    return errors;
  }

  deref(type, mod, depth = 0) {
    while (type && type.t === "ref" && depth < 30) {
      const r = this.lookup(mod, type.name);
      if (!r) return { type: OPEN, mod };
      type = r.type;
      mod = r.mod;
      depth++;
    }
    return { type, mod };
  }

  // The fields of an interface, with those of the interfaces it extends
  // (only TypeMeta in the generated models: apiVersion and kind).
  fields(type, mod) {
    if (!type.bases || type.bases.length === 0) return type;
    const props = new Map(type.props);
    let index = type.index;
    for (const b of type.bases) {
      if (b === "TypeMeta") {
        props.set("apiVersion", { t: "prim" });
        props.set("kind", { t: "prim" });
        continue;
      }
      const r = this.deref({ t: "ref", name: b }, mod);
      if (r.type.t !== "object") return { t: "open" };
      const f = this.fields(r.type, r.mod);
      for (const [k, v] of f.props) if (!props.has(k)) props.set(k, v);
      index = index || f.index;
    }
    return { t: "object", props, index };
  }

  walk(value, type, mod, at, errors, depth) {
    if (depth > 60 || value === null || value === undefined) return;
    ({ type, mod } = this.deref(type, mod));
    if (!type || type.t === "open" || type.t === "prim") return;
    if (type.t === "union") {
      // Try each alternative that matches the value's shape; if one passes,
      // the value is fine; otherwise report the first alternative's errors.
      let first = null;
      for (const alt of type.alts) {
        const d = this.deref(alt, mod);
        if (d.type.t === "open") return;
        const shapeOk =
          (d.type.t === "array" && Array.isArray(value)) ||
          (d.type.t === "object" && typeof value === "object" && !Array.isArray(value));
        if (!shapeOk) continue;
        const errs = [];
        this.walk(value, d.type, d.mod, at, errs, depth + 1);
        if (errs.length === 0) return;
        if (!first) first = errs;
      }
      if (first) errors.push(...first);
      return;
    }
    if (type.t === "array") {
      if (!Array.isArray(value)) return; // a type error: validate() reports it
      value.forEach((v, i) => this.walk(v, type.of, mod, [...at, i], errors, depth + 1));
      return;
    }
    if (type.t === "object") {
      if (typeof value !== "object" || Array.isArray(value)) return;
      const f = this.fields(type, mod);
      if (f.t !== "object") return;
      // An object type that declares nothing (e.g. FieldsV1, or a CRD field
      // with x-kubernetes-preserve-unknown-fields) takes anything.
      if (f.props.size === 0 && !f.index) return;
      for (const [k, v] of Object.entries(value)) {
        const sub = [...at, k];
        if (f.props.has(k)) this.walk(v, f.props.get(k), mod, sub, errors, depth + 1);
        else if (f.index) this.walk(v, f.index, mod, sub, errors, depth + 1);
        else errors.push({ path: sub, msg: `unknown field "${k}"` });
      }
    }
  }
}
