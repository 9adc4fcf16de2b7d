/**
 * Which network addresses the fetcher may connect to. Pure: no DNS, no sockets.
 *
 * The rule: an address is allowed only if it is ordinary global unicast. ipaddr.js
 * names the special ranges (loopback, private, linkLocal, carrierGradeNat, reserved,
 * multicast, ...); anything it does not call `unicast` is blocked. Two things it leaves
 * as `unicast` are blocked here from a data table: IPv6 outside 2000::/3 (nothing there
 * is global unicast today, and it holds the deprecated IPv4-compatible ::a.b.c.d).
 *
 * IPv4 hidden in IPv6 is judged by the IPv4 inside it (IPv4-mapped, IPv4-translated,
 * NAT64 64:ff9b::/96 and 6to4 2002::/16), so ::ffff:127.0.0.1 is loopback and a NAT64
 * address of a public host stays usable on a DNS64 network.
 *
 * Teredo (2001::/32) is blocked outright instead of decoding the XOR'd client address:
 * the tunnel endpoint is a relay we do not control, no image origin publishes Teredo
 * addresses, and request-filtering-agent refuses the whole range anyway.
 */
import ipaddr from 'ipaddr.js';

export interface AddressClass {
  blocked: boolean;
  /** ipaddr.js range name or our label; `outer→inner` for IPv4 embedded in IPv6. */
  range: string;
}

/** IPv6 prefixes that carry an IPv4 address, and where its four bytes sit. */
const EMBEDDED_IPV4_PREFIXES: ReadonlyArray<{ cidr: string; label: string; byteOffset: number }> = [
  { cidr: '::ffff:0:0/96', label: 'ipv4Mapped', byteOffset: 12 }, // RFC 4291
  { cidr: '::ffff:0:0:0/96', label: 'ipv4Translated', byteOffset: 12 }, // RFC 6145
  { cidr: '64:ff9b::/96', label: 'nat64', byteOffset: 12 }, // RFC 6052 well-known prefix
  { cidr: '2002::/16', label: '6to4', byteOffset: 2 }, // RFC 3056
];

/** IPv6 that ipaddr.js calls `unicast` but that is not global unicast. */
const IPV6_GLOBAL_UNICAST = '2000::/3'; // RFC 4291 section 2.4
const OUTSIDE_GLOBAL_UNICAST = 'notGlobalUnicast';

/**
 * `::a.b.c.d` is the deprecated IPv4-compatible form (RFC 4291 2.5.5.1), which glibc's
 * inet_ntop still prints; ipaddr.js reads it as IPv4-mapped, so it is caught first.
 */
const IPV4_COMPATIBLE_TEXT = /^::\d{1,3}(?:\.\d{1,3}){3}$/;
const IPV4_COMPATIBLE = 'ipv4Compatible';

/** The one ipaddr.js range name that may be connected to. */
const ALLOWED_RANGE = 'unicast';

const embeddedPrefixes = EMBEDDED_IPV4_PREFIXES.map((entry) => ({
  ...entry,
  parsed: ipaddr.IPv6.parseCIDR(entry.cidr),
}));
const globalUnicast = ipaddr.IPv6.parseCIDR(IPV6_GLOBAL_UNICAST);

/** `[::1]` as a URL writes it → `::1`. */
function withoutBrackets(ip: string): string {
  return ip.startsWith('[') && ip.endsWith(']') ? ip.slice(1, -1) : ip;
}

/** Parses like inet_aton does (127.1, 2130706433, 0x7f.0.0.1). */
function parseAddress(ip: string): ipaddr.IPv4 | ipaddr.IPv6 | null {
  try {
    return ipaddr.parse(withoutBrackets(ip));
  } catch {
    return null;
  }
}

function classifyIPv4(address: ipaddr.IPv4): AddressClass {
  const range = address.range();
  return { blocked: range !== ALLOWED_RANGE, range };
}

function classifyIPv6(address: ipaddr.IPv6): AddressClass {
  for (const prefix of embeddedPrefixes) {
    if (!address.match(prefix.parsed)) continue;
    const bytes = address.toByteArray().slice(prefix.byteOffset, prefix.byteOffset + 4);
    const inner = classifyIPv4(new ipaddr.IPv4(bytes));
    return { blocked: inner.blocked, range: `${prefix.label}→${inner.range}` };
  }
  const range = address.range();
  if (range !== ALLOWED_RANGE) return { blocked: true, range };
  if (!address.match(globalUnicast)) return { blocked: true, range: OUTSIDE_GLOBAL_UNICAST };
  return { blocked: false, range };
}

/** Classifies one IP address string; anything that does not parse is blocked. */
export function classifyAddress(ip: string): AddressClass {
  if (IPV4_COMPATIBLE_TEXT.test(withoutBrackets(ip))) return { blocked: true, range: IPV4_COMPATIBLE };
  const address = parseAddress(ip);
  if (address === null) return { blocked: true, range: 'unparseable' };
  return address.kind() === 'ipv4'
    ? classifyIPv4(address as ipaddr.IPv4)
    : classifyIPv6(address as ipaddr.IPv6);
}

/**
 * Exceptions an operator allows although the policy blocks them (an origin on the
 * LAN): exact addresses or CIDRs. Invalid entries throw, so config fails at start.
 */
export type AddressAllowList = ReadonlyArray<[ipaddr.IPv4 | ipaddr.IPv6, number]>;

export function parseAllowList(entries: readonly string[]): AddressAllowList {
  return entries.map((entry) => {
    if (entry.includes('/')) return ipaddr.parseCIDR(entry);
    const address = ipaddr.parse(entry);
    return [address, address.kind() === 'ipv4' ? 32 : 128];
  });
}

function isAllowListed(address: ipaddr.IPv4 | ipaddr.IPv6, allowList: AddressAllowList): boolean {
  return allowList.some(
    ([network, bits]) => network.kind() === address.kind() && address.match(network, bits),
  );
}

/**
 * The connection-time check: `null` when `ip` may be connected to, otherwise the
 * reason for the log (the address and the rule it broke). Call it on the address a
 * socket is about to connect to, after DNS, on every redirect hop.
 */
export function connectRefusal(ip: string, allowList: AddressAllowList = []): string | null {
  const address = parseAddress(ip);
  if (address !== null && isAllowListed(address, allowList)) return null;
  const { blocked, range } = classifyAddress(ip);
  return blocked ? `address ${ip} is ${range}` : null;
}
