/** Reading a node's HTTP port in tests: plain GETs and the Prometheus text format. */
import { httpGet, type HealthzResult } from "../../src/local/natsServer";

/** GET base + path; rejects on timeout or a refused connection. */
export function get(base: string, path: string, timeoutMs = 2000): Promise<HealthzResult> {
  const url = new URL(path, base);
  return httpGet(url.hostname, Number(url.port), url.pathname + url.search, timeoutMs);
}

/** Prometheus text as `name{labels}` -> value (labels exactly as exposed, in their order). */
export function parsePrometheus(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    samples.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return samples;
}

/** Scrapes /metrics and parses it. */
export async function scrape(base: string): Promise<Map<string, number>> {
  const r = await get(base, "/metrics");
  if (r.status !== 200) throw new Error(`GET ${base}/metrics answered ${r.status}: ${r.body}`);
  return parsePrometheus(r.body);
}
