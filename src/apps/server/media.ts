/**
 * Fetching the images and videos a request names, safe against server-side request forgery (the classic hole of
 * peer servers, e.g. vLLM GHSA-pf3h-qjgv-vcpr):
 * - `data:` URIs; `http:`/`https:` URLs; local files (`file://` URLs or absolute paths) only under an allowed folder,
 *   resolved with symlinks and refused outside it (no `..` escape);
 * - the IP address of every hop is checked where the connection is made (the DNS lookup of the socket itself, so a
 *   name cannot resolve to a public address for a check and to a private one for the connection): loopback,
 *   private, link-local, shared, multicast and reserved ranges are refused unless private media is allowed;
 * - an optional allow-list of domains (a name and its subdomains);
 * - redirects followed by hand, at most `maxRedirects`, each hop checked again;
 * - a byte cap enforced while streaming (and on Content-Length) and a total time limit, before anything is decoded.
 */
import dns from 'node:dns';
import fs from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiError } from './errors.js';

export interface MediaPolicy {
  /** Allow loopback/private/link-local addresses (tests, LANs). */
  allowPrivate: boolean;
  /** Only these domains (and their subdomains), when given. */
  allowedDomains: readonly string[] | null;
  /** Local files are readable under this folder only; null: none. */
  allowedLocalPath: string | null;
  maxBytes: number;
  timeoutMs: number;
  maxRedirects: number;
  /** Which resolved addresses are refused (default: the special-purpose ranges, none with `allowPrivate`). */
  refuseAddress?: (address: string) => boolean;
}

export const DEFAULT_MEDIA_POLICY: MediaPolicy = {
  allowPrivate: false,
  allowedDomains: null,
  allowedLocalPath: null,
  maxBytes: 20 * 1024 * 1024,
  timeoutMs: 10_000,
  maxRedirects: 3,
};

export interface Media {
  bytes: Uint8Array;
  /** For error messages: the URL without a data payload. */
  name: string;
}

const refused = (message: string, code = 'media_refused') =>
  new ApiError(400, 'invalid_request_error', message, null, code);

/** Addresses a fetch may not reach: IPv4 and IPv6 special-purpose ranges (RFC 6890 and its updates). */
const BLOCKED = new net.BlockList();
for (const [prefix, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const)
  BLOCKED.addSubnet(prefix, bits, 'ipv4');
for (const [prefix, bits] of [
  ['::', 127],
  ['64:ff9b::', 96],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const)
  BLOCKED.addSubnet(prefix, bits, 'ipv6');

/** True when `address` (an IP literal) is in a refused range; IPv4-mapped IPv6 is judged as its IPv4. */
export function isPrivateAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return BLOCKED.check(mapped, 'ipv4');
  const family = net.isIP(address);
  if (family === 0) return true;
  return BLOCKED.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** Reads the bytes behind a media URL under the policy. */
export async function fetchMedia(url: string, policy: MediaPolicy, signal?: AbortSignal): Promise<Media> {
  if (url.startsWith('data:')) return { bytes: decodeDataUri(url), name: 'data URI' };
  if (url.startsWith('file:') || path.isAbsolute(url)) return readLocal(url, policy);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw refused(`media URL ${JSON.stringify(shorten(url))} is not a URL`, 'invalid_media_url');
  }
  const timeout = AbortSignal.timeout(policy.timeoutMs);
  const combined = signal ? AbortSignal.any([signal, timeout]) : timeout;
  try {
    return { bytes: await fetchRemote(parsed, policy, combined), name: shorten(url) };
  } catch (error) {
    if (timeout.aborted)
      throw refused(`media ${shorten(url)}: not received within ${policy.timeoutMs / 1000} s`, 'media_timeout');
    throw error;
  }
}

function shorten(url: string): string {
  return url.length > 200 ? `${url.slice(0, 200)}…` : url;
}

function decodeDataUri(uri: string): Uint8Array {
  const comma = uri.indexOf(',');
  if (comma < 0) throw refused('a data URI needs a comma before its payload', 'invalid_media_url');
  const header = uri.slice(5, comma);
  const payload = uri.slice(comma + 1);
  if (header.split(';').includes('base64')) return Buffer.from(payload, 'base64');
  try {
    return Buffer.from(decodeURIComponent(payload), 'latin1');
  } catch {
    throw refused('a data URI has an invalid percent-encoding', 'invalid_media_url');
  }
}

async function readLocal(url: string, policy: MediaPolicy): Promise<Media> {
  if (!policy.allowedLocalPath)
    throw refused('local media files are not allowed (the server was started without --allowed-local-media-path)');
  let file: string;
  try {
    file = url.startsWith('file:') ? fileURLToPath(url) : url;
  } catch {
    throw refused(`${shorten(url)} is not a valid file URL`, 'invalid_media_url');
  }
  const root = await fs.realpath(policy.allowedLocalPath);
  let real: string;
  try {
    real = await fs.realpath(file);
  } catch {
    throw refused(`${shorten(url)}: no such file under the allowed media folder`, 'media_not_found');
  }
  if (!real.startsWith(root + path.sep))
    throw refused(`${shorten(url)} is outside the allowed media folder`, 'media_refused');
  const stat = await fs.stat(real);
  if (!stat.isFile()) throw refused(`${shorten(url)} is not a file`, 'media_not_found');
  if (stat.size > policy.maxBytes)
    throw refused(`${shorten(url)} is larger than ${policy.maxBytes} bytes`, 'media_too_large');
  return { bytes: await fs.readFile(real), name: shorten(url) };
}

function domainAllowed(host: string, allowed: readonly string[]): boolean {
  const name = host.toLowerCase().replace(/\.$/, '');
  return allowed.some((d) => name === d || name.endsWith(`.${d}`));
}

function refusesAddress(policy: MediaPolicy): (address: string) => boolean {
  return policy.refuseAddress ?? (policy.allowPrivate ? () => false : isPrivateAddress);
}

/** The socket's own DNS lookup, refusing private addresses: what is checked is what is connected to. */
function guardedLookup(refuse: (address: string) => boolean): net.LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return callback(error, '', 0);
      const list = addresses as dns.LookupAddress[];
      const bad = list.find((a) => refuse(a.address));
      if (bad) {
        const refusal = Object.assign(new Error(`${hostname} resolves to the private address ${bad.address}`), {
          code: 'EPRIVATE',
        });
        return callback(refusal, '', 0);
      }
      if (list.length === 0) return callback(Object.assign(new Error('no address'), { code: 'ENOTFOUND' }), '', 0);
      if ((options as { all?: boolean }).all)
        return (callback as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, list);
      callback(null, list[0].address, list[0].family);
    });
  };
}

async function fetchRemote(start: URL, policy: MediaPolicy, signal: AbortSignal): Promise<Uint8Array> {
  let url = start;
  for (let hop = 0; ; hop++) {
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw refused(`media URL scheme ${url.protocol} is not allowed (http, https, data)`, 'media_refused');
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (policy.allowedDomains && !domainAllowed(host, policy.allowedDomains))
      throw refused(`media host ${host} is not in the allowed domains`, 'media_refused');
    if (net.isIP(host) && refusesAddress(policy)(host))
      throw refused(`media host ${host} is a private address`, 'media_refused');
    const response = await request(url, policy, signal);
    const status = response.statusCode ?? 0;
    if ([301, 302, 303, 307, 308].includes(status)) {
      response.resume();
      const location = response.headers.location;
      if (!location) throw refused(`media ${url.href}: redirect without a location`, 'media_fetch_failed');
      if (hop >= policy.maxRedirects)
        throw refused(`media ${start.href}: more than ${policy.maxRedirects} redirects`, 'media_fetch_failed');
      url = new URL(location, url);
      continue;
    }
    if (status !== 200) {
      response.resume();
      throw refused(`media ${url.href}: HTTP ${status}`, 'media_fetch_failed');
    }
    const declared = Number(response.headers['content-length']);
    if (Number.isFinite(declared) && declared > policy.maxBytes) {
      response.destroy();
      throw refused(`media ${url.href} is larger than ${policy.maxBytes} bytes`, 'media_too_large');
    }
    return readCapped(response, policy.maxBytes, url.href);
  }
}

function request(url: URL, policy: MediaPolicy, signal: AbortSignal): Promise<http.IncomingMessage> {
  const client = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = client.get(
      url,
      { lookup: guardedLookup(refusesAddress(policy)), signal, headers: { accept: '*/*' } },
      resolve,
    );
    req.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EPRIVATE') reject(refused(`media ${url.href}: ${error.message}`, 'media_refused'));
      else if (signal.aborted) reject(error);
      else reject(refused(`media ${url.href}: ${error.message}`, 'media_fetch_failed'));
    });
  });
}

async function readCapped(response: http.IncomingMessage, maxBytes: number, name: string): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of response as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > maxBytes) {
      response.destroy();
      throw refused(`media ${name} is larger than ${maxBytes} bytes`, 'media_too_large');
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}
