// The API client: the key lives in sessionStorage only and travels as a bearer header.

const KEY = "chronos.key";
const listeners = {unauthorized: [], offline: [], online: []};

export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {status, title: `HTTP ${status}`};
  }
}

export class Unreachable extends Error {
  constructor() {
    super("The server is unreachable.");
  }
}

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  set(key) {
    sessionStorage.setItem(KEY, key);
  },
  clear() {
    sessionStorage.removeItem(KEY);
  },
};

export function on(event, fn) {
  listeners[event].push(fn);
}

function emit(event, arg) {
  for (const fn of listeners[event]) fn(arg);
}

let offline = false;
let probe = null;

function wentOffline() {
  if (!offline) {
    offline = true;
    emit("offline");
  }
  if (!probe) probe = setTimeout(checkHealth, 2000);
}

async function checkHealth() {
  probe = null;
  try {
    const res = await fetch("/health", {cache: "no-store"});
    if (res.status < 500 || res.status === 503) {
      offline = false;
      emit("online");
      return;
    }
  } catch {
    // still unreachable
  }
  wentOffline();
}

function url(path, query) {
  const u = new URL(path.startsWith("/") ? path : `/api/v1/${path}`, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === undefined || v === null || v === "") continue;
    for (const item of Array.isArray(v) ? v : [v]) u.searchParams.append(k, String(item));
  }
  return u;
}

/** request("events", {query, method, body, key}) -> parsed JSON (or text), ApiError on a problem. */
export async function request(path, {method = "GET", query, body, key, headers = {}, raw = false} = {}) {
  const secret = key || session.key;
  const init = {method, headers: {...headers}, cache: "no-store"};
  if (secret) init.headers.Authorization = `Bearer ${secret}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url(path, query), init);
  } catch {
    wentOffline();
    throw new Unreachable();
  }
  if (offline) {
    offline = false;
    emit("online");
  }
  if (res.status === 502 || res.status === 504) {
    wentOffline();
    throw new Unreachable();
  }
  const type = res.headers.get("content-type") || "";
  const data = type.includes("json") ? await res.json().catch(() => null) : raw ? await res.blob() : await res.text();
  if (!res.ok) {
    const err = new ApiError(res.status, type.includes("json") ? data : null);
    if (res.status === 401 && !key) emit("unauthorized", err);
    throw err;
  }
  return data;
}

export const api = {
  get: (path, query) => request(path, {query}),
  post: (path, body, query) => request(path, {method: "POST", body: body === undefined ? {} : body, query}),
  patch: (path, body) => request(path, {method: "PATCH", body}),
  put: (path, body) => request(path, {method: "PUT", body}),
  del: (path, query) => request(path, {method: "DELETE", query}),
};
