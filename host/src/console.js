// Installs `console`; `print(level, text)` is the host's sink (0 log, 1 warn, 2 error).
(function (print) {
  'use strict';
  const MAX_DEPTH = 2;
  const quote = (s) => "'" + s.replace(/\\/g, '\\\\').replace(/'/g, "\\'").replace(/\n/g, '\\n') + "'";
  const key = (k) => (/^[A-Za-z_$][\w$]*$/.test(k) ? k : quote(k));
  function inspect(value, depth, seen) {
    switch (typeof value) {
      case 'string': return depth === 0 ? value : quote(value);
      case 'number': return Object.is(value, -0) ? '-0' : String(value);
      case 'bigint': return value + 'n';
      case 'symbol': return value.toString();
      case 'undefined': return 'undefined';
      case 'boolean': return String(value);
      case 'function': return '[Function: ' + (value.name || '(anonymous)') + ']';
    }
    if (value === null) return 'null';
    if (seen.includes(value)) return '[Circular]';
    if (value instanceof Error) return value.stack || String(value);
    if (value instanceof Date) return isNaN(value) ? 'Invalid Date' : value.toISOString();
    if (value instanceof RegExp) return String(value);
    const next = seen.concat([value]);
    const inner = (v) => inspect(v, depth + 1, next);
    if (Array.isArray(value)) {
      if (depth > MAX_DEPTH) return '[Array]';
      return value.length ? '[ ' + Array.from(value, inner).join(', ') + ' ]' : '[]';
    }
    if (value instanceof Map) {
      if (depth > MAX_DEPTH) return '[Map]';
      return 'Map(' + value.size + ') { ' + Array.from(value, ([k, v]) => inner(k) + ' => ' + inner(v)).join(', ') + ' }';
    }
    if (value instanceof Set) {
      if (depth > MAX_DEPTH) return '[Set]';
      return 'Set(' + value.size + ') { ' + Array.from(value, inner).join(', ') + ' }';
    }
    if (depth > MAX_DEPTH) return '[Object]';
    const entries = Object.keys(value).map((k) => key(k) + ': ' + inner(value[k]));
    return entries.length ? '{ ' + entries.join(', ') + ' }' : '{}';
  }
  const format = (args) => args.map((a) => inspect(a, 0, [])).join(' ');
  const console = {};
  const levels = { log: 0, info: 0, debug: 0, warn: 1, trace: 1, error: 2 };
  for (const name of Object.keys(levels)) {
    const level = levels[name];
    console[name] = { [name](...args) { print(level, format(args)); } }[name];
  }
  Object.defineProperty(globalThis, 'console', { value: console, writable: true, configurable: true, enumerable: false });
})
