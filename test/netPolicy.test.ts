// Unit tests only: nothing here opens a socket or asks DNS.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { classifyAddress, connectRefusal, parseAllowList } from '../server/fetch/netPolicy.js';

interface ClassifyCase {
  name: string;
  ip: string;
  blocked: boolean;
  range: string;
}

const CLASSIFY_CASES: ClassifyCase[] = [
  // IPv4 loopback, including the short and numeric spellings inet_aton accepts
  { name: 'loopback', ip: '127.0.0.1', blocked: true, range: 'loopback' },
  { name: 'loopback, top of 127/8', ip: '127.255.255.254', blocked: true, range: 'loopback' },
  { name: 'loopback short form 127.1', ip: '127.1', blocked: true, range: 'loopback' },
  { name: 'loopback as one decimal number', ip: '2130706433', blocked: true, range: 'loopback' },
  { name: 'loopback in hex', ip: '0x7f.0.0.1', blocked: true, range: 'loopback' },
  { name: 'loopback in octal', ip: '0177.0.0.1', blocked: true, range: 'loopback' },
  // RFC 1918
  { name: 'private 10/8', ip: '10.1.2.3', blocked: true, range: 'private' },
  { name: 'private 172.16/12 low', ip: '172.16.0.1', blocked: true, range: 'private' },
  { name: 'private 172.16/12 high', ip: '172.31.255.255', blocked: true, range: 'private' },
  { name: 'just above 172.16/12 is public', ip: '172.32.0.1', blocked: false, range: 'unicast' },
  { name: 'private 192.168/16', ip: '192.168.1.1', blocked: true, range: 'private' },
  // other special IPv4
  { name: 'cloud metadata', ip: '169.254.169.254', blocked: true, range: 'linkLocal' },
  { name: 'link-local', ip: '169.254.0.1', blocked: true, range: 'linkLocal' },
  { name: 'CGNAT 100.64/10', ip: '100.64.0.1', blocked: true, range: 'carrierGradeNat' },
  { name: 'CGNAT top', ip: '100.127.255.254', blocked: true, range: 'carrierGradeNat' },
  { name: 'just below CGNAT is public', ip: '100.63.255.255', blocked: false, range: 'unicast' },
  { name: 'unspecified 0.0.0.0', ip: '0.0.0.0', blocked: true, range: 'unspecified' },
  { name: 'this network 0/8', ip: '0.1.2.3', blocked: true, range: 'unspecified' },
  { name: 'multicast', ip: '224.0.0.1', blocked: true, range: 'multicast' },
  { name: 'multicast top', ip: '239.255.255.250', blocked: true, range: 'multicast' },
  { name: 'broadcast', ip: '255.255.255.255', blocked: true, range: 'broadcast' },
  { name: 'reserved 240/4', ip: '240.0.0.1', blocked: true, range: 'reserved' },
  { name: 'IETF protocol assignments 192.0.0/24', ip: '192.0.0.8', blocked: true, range: 'reserved' },
  { name: 'TEST-NET-1', ip: '192.0.2.1', blocked: true, range: 'reserved' },
  { name: 'TEST-NET-2', ip: '198.51.100.7', blocked: true, range: 'reserved' },
  { name: 'TEST-NET-3', ip: '203.0.113.9', blocked: true, range: 'reserved' },
  { name: 'benchmarking 198.18/15', ip: '198.19.0.1', blocked: true, range: 'reserved' },
  { name: 'old 6to4 relay anycast', ip: '192.88.99.1', blocked: true, range: 'reserved' },
  { name: 'public IPv4', ip: '93.184.216.34', blocked: false, range: 'unicast' },
  { name: 'public IPv4 8.8.8.8', ip: '8.8.8.8', blocked: false, range: 'unicast' },
  // IPv6 special ranges
  { name: 'IPv6 loopback', ip: '::1', blocked: true, range: 'loopback' },
  { name: 'IPv6 loopback in brackets', ip: '[::1]', blocked: true, range: 'loopback' },
  { name: 'IPv6 unspecified', ip: '::', blocked: true, range: 'unspecified' },
  { name: 'unique local fc00::/7 (fd)', ip: 'fd12:3456::1', blocked: true, range: 'uniqueLocal' },
  { name: 'unique local fc00::/7 (fc)', ip: 'fc00::1', blocked: true, range: 'uniqueLocal' },
  { name: 'link-local fe80::/10', ip: 'fe80::1', blocked: true, range: 'linkLocal' },
  { name: 'link-local with zone id', ip: 'fe80::1%eth0', blocked: true, range: 'linkLocal' },
  { name: 'IPv6 multicast', ip: 'ff02::1', blocked: true, range: 'multicast' },
  { name: 'deprecated site-local', ip: 'fec0::1', blocked: true, range: 'deprecatedSiteLocal' },
  { name: 'documentation 2001:db8::/32', ip: '2001:db8::1', blocked: true, range: 'reserved' },
  { name: 'discard-only 100::/64', ip: '100::1', blocked: true, range: 'discard' },
  { name: 'IPv4-compatible (deprecated), dotted', ip: '::127.0.0.1', blocked: true, range: 'ipv4Compatible' },
  { name: 'IPv4-compatible in brackets', ip: '[::10.0.0.1]', blocked: true, range: 'ipv4Compatible' },
  { name: 'IPv4-compatible of public, dotted', ip: '::8.8.8.8', blocked: true, range: 'ipv4Compatible' },
  { name: 'IPv4-compatible, hex', ip: '::7f00:1', blocked: true, range: 'notGlobalUnicast' },
  { name: 'outside 2000::/3', ip: '4000::1', blocked: true, range: 'notGlobalUnicast' },
  { name: 'public IPv6', ip: '2606:4700::6810:85e5', blocked: false, range: 'unicast' },
  // IPv4 embedded in IPv6: judged by the IPv4 inside
  { name: 'mapped loopback (dotted)', ip: '::ffff:127.0.0.1', blocked: true, range: 'ipv4Mapped→loopback' },
  { name: 'mapped loopback (hex, as URL prints it)', ip: '::ffff:7f00:1', blocked: true, range: 'ipv4Mapped→loopback' },
  { name: 'mapped metadata', ip: '::ffff:169.254.169.254', blocked: true, range: 'ipv4Mapped→linkLocal' },
  { name: 'mapped unspecified', ip: '::ffff:0.0.0.0', blocked: true, range: 'ipv4Mapped→unspecified' },
  { name: 'mapped public', ip: '::ffff:8.8.8.8', blocked: false, range: 'ipv4Mapped→unicast' },
  { name: 'IPv4-translated private', ip: '::ffff:0:10.0.0.1', blocked: true, range: 'ipv4Translated→private' },
  { name: '6to4 of private', ip: '2002:c0a8:0101::1', blocked: true, range: '6to4→private' },
  { name: '6to4 of loopback', ip: '2002:7f00:1::', blocked: true, range: '6to4→loopback' },
  { name: '6to4 of public', ip: '2002:0808:0808::1', blocked: false, range: '6to4→unicast' },
  { name: 'NAT64 of private', ip: '64:ff9b::10.0.0.1', blocked: true, range: 'nat64→private' },
  { name: 'NAT64 of metadata', ip: '64:ff9b::a9fe:a9fe', blocked: true, range: 'nat64→linkLocal' },
  { name: 'NAT64 of public (DNS64 networks)', ip: '64:ff9b::8.8.8.8', blocked: false, range: 'nat64→unicast' },
  { name: 'NAT64 local-use prefix 64:ff9b:1::/48', ip: '64:ff9b:1::a00:1', blocked: true, range: 'rfc6052' },
  { name: 'Teredo blocked outright', ip: '2001:0:4136:e378:8000:63bf:3fff:fdd2', blocked: true, range: 'teredo' },
  { name: 'Teredo of a public client still blocked', ip: '2001::f7f7:f7f7', blocked: true, range: 'teredo' },
  // garbage
  { name: 'empty string', ip: '', blocked: true, range: 'unparseable' },
  { name: 'hostname', ip: 'localhost', blocked: true, range: 'unparseable' },
  { name: 'five parts', ip: '1.2.3.4.5', blocked: true, range: 'unparseable' },
  { name: 'octet out of range', ip: '256.0.0.1', blocked: true, range: 'unparseable' },
  { name: 'two double colons', ip: '1::2::3', blocked: true, range: 'unparseable' },
  { name: 'IPv4 with port', ip: '127.0.0.1:80', blocked: true, range: 'unparseable' },
];

describe('classifyAddress', () => {
  for (const testCase of CLASSIFY_CASES) {
    it(testCase.name, () => {
      assert.deepEqual(classifyAddress(testCase.ip), { blocked: testCase.blocked, range: testCase.range });
    });
  }
});

interface RefusalCase {
  name: string;
  ip: string;
  allow: string[];
  refused: boolean;
}

const REFUSAL_CASES: RefusalCase[] = [
  { name: 'public address passes', ip: '8.8.8.8', allow: [], refused: false },
  { name: 'loopback refused', ip: '127.0.0.1', allow: [], refused: true },
  { name: 'exact allow-list entry lets one address through', ip: '127.0.0.1', allow: ['127.0.0.1'], refused: false },
  { name: 'exact entry does not cover its neighbour', ip: '127.0.0.2', allow: ['127.0.0.1'], refused: true },
  { name: 'CIDR entry covers its range', ip: '10.9.8.7', allow: ['10.0.0.0/8'], refused: false },
  { name: 'IPv4 entry never matches IPv6', ip: '::1', allow: ['127.0.0.0/8'], refused: true },
  { name: 'IPv6 entry', ip: 'fd00::5', allow: ['fd00::/8'], refused: false },
  { name: 'unparseable refused even with a broad list', ip: 'nonsense', allow: ['0.0.0.0/0'], refused: true },
];

describe('connectRefusal', () => {
  for (const testCase of REFUSAL_CASES) {
    it(testCase.name, () => {
      const refusal = connectRefusal(testCase.ip, parseAllowList(testCase.allow));
      assert.equal(refusal !== null, testCase.refused, String(refusal));
    });
  }

  it('names the address and the rule it broke', () => {
    assert.equal(connectRefusal('::ffff:7f00:1'), 'address ::ffff:7f00:1 is ipv4Mapped→loopback');
  });

  it('rejects an invalid allow-list entry at parse time', () => {
    assert.throws(() => parseAllowList(['10.0.0.0/99']));
    assert.throws(() => parseAllowList(['not-an-address']));
  });
});
