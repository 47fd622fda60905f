/**
 * Server-side request forgery guard: which IP addresses a download may connect to. Public unicast
 * addresses only, unless a range is allow-listed (the tests allow-list loopback explicitly).
 * Checked at connect time on every resolved address, so DNS rebinding cannot slip past it.
 */
import ipaddr from 'ipaddr.js';
import { ConfigError } from '../../domain/errors.js';

export class AddressPolicy {
  private readonly allowed: [ipaddr.IPv4 | ipaddr.IPv6, number][];

  /**
   * `allow`: CIDRs or single addresses, e.g. ["127.0.0.0/8", "::1", "10.1.2.0/24"], as the
   * configuration checked them at start (FACEMATCH_SOURCE_ALLOW); one that does not parse is a
   * ConfigError all the same.
   */
  constructor(allow: readonly string[] = []) {
    this.allowed = allow.map((a) => {
      try {
        if (a.includes('/')) return ipaddr.parseCIDR(a);
        const ip = ipaddr.parse(a);
        return [ip, ip.kind() === 'ipv4' ? 32 : 128];
      } catch (error) {
        throw new ConfigError(`FACEMATCH_SOURCE_ALLOW: "${a}" is not an IP address or a CIDR`, { cause: error });
      }
    });
  }

  /** Why the address is refused, or undefined when it may be used. */
  refusal(address: string): string | undefined {
    let ip: ipaddr.IPv4 | ipaddr.IPv6;
    try {
      ip = ipaddr.process(address);
    } catch {
      return `"${address}" is not an IP address`;
    }
    for (const [net, bits] of this.allowed) {
      if (net.kind() === ip.kind() && ip.match(net, bits)) return undefined;
    }
    const range = ip.range();
    return range === 'unicast' ? undefined : `${address} is a ${range} address`;
  }
}
