/** Which chunk sets of the snapshot bucket a sweep purges as the leftovers of dead uploads. */
import { orphanChunkSets, type OrphanSweepInput, type UnnamedChunkSet } from "../../src/replica/orphanChunkPolicy";
import { mulberry32 } from "../support/random";

const AGE = 1000;

function input(over: Partial<OrphanSweepInput>): OrphanSweepInput {
  return { chunkSets: new Map(), namedNuids: new Set(), previous: new Map(), nowMs: 0, orphanChunkAgeMs: AGE, maxSets: 100, ...over };
}

/** Runs sweeps at the given times over the same listing, feeding each one's memory to the next; returns what each purged. */
function sweeps(times: number[], over: Partial<OrphanSweepInput>): string[][] {
  let previous: ReadonlyMap<string, UnnamedChunkSet> = new Map();
  return times.map((nowMs) => {
    const d = orphanChunkSets(input({ ...over, previous, nowMs }));
    previous = d.unnamed;
    return d.purge.map((p) => p.nuid);
  });
}

test("an unnamed set is purged by the first sweep at least the age after the sweep that first saw it, never by that first one", () => {
  const chunkSets = new Map([["dead", 3]]);
  expect(sweeps([0, 500, 999, 1000], { chunkSets })).toEqual([[], [], [], ["dead"]]);
  // Even with no age at all, one sweep alone never purges: it must have been unnamed before.
  expect(sweeps([0, 0], { chunkSets, orphanChunkAgeMs: 0 })).toEqual([[], ["dead"]]);
  expect(orphanChunkSets(input({ chunkSets, nowMs: 1e9 })).purge).toEqual([]);
});

test("a set that gets a chunk between sweeps starts its clock again: an upload in progress is never purged", () => {
  let previous: ReadonlyMap<string, UnnamedChunkSet> = new Map();
  let seenChunks = 0;
  let seenSinceMs = 0;
  // One chunk every 900 ms (under the age), swept every 600 ms, for a minute.
  for (let t = 0; t <= 60_000; t += 600) {
    const chunks = 1 + Math.floor(t / 900);
    if (chunks !== seenChunks) [seenChunks, seenSinceMs] = [chunks, t];
    const d = orphanChunkSets(input({ chunkSets: new Map([["live", chunks]]), previous, nowMs: t }));
    expect(d.purge).toEqual([]);
    expect(d.unnamed.get("live")).toEqual({ chunks, sinceMs: seenSinceMs });
    previous = d.unnamed;
  }
  // The writer stops (it died): the age after the sweep that saw its last chunk, the set goes.
  const last = orphanChunkSets(input({ chunkSets: new Map([["live", seenChunks]]), previous, nowMs: seenSinceMs + AGE }));
  expect(last.purge).toEqual([{ nuid: "live", chunks: seenChunks, unchangedMs: AGE }]);
});

test("named sets are never purged or timed, and a set that was named starts its clock when it is first seen unnamed", () => {
  const chunkSets = new Map([
    ["snap", 5],
    ["deleted", 2],
  ]);
  expect(sweeps([0, 5000, 10_000], { chunkSets, namedNuids: new Set(["snap", "deleted"]) })).toEqual([[], [], []]);
  // "deleted" loses its name (its object was deleted by a writer that died before purging the chunks).
  let previous = orphanChunkSets(input({ chunkSets, namedNuids: new Set(["snap", "deleted"]), nowMs: 0 })).unnamed;
  expect(previous.size).toBe(0);
  let d = orphanChunkSets(input({ chunkSets, namedNuids: new Set(["snap"]), previous, nowMs: 5000 }));
  expect(d.purge).toEqual([]);
  previous = d.unnamed;
  d = orphanChunkSets(input({ chunkSets, namedNuids: new Set(["snap"]), previous, nowMs: 6000 }));
  expect(d.purge).toEqual([{ nuid: "deleted", chunks: 2, unchangedMs: 1000 }]);
});

test("a set named again between sweeps (a listing that came back short) is forgotten, not purged", () => {
  const chunkSets = new Map([["snap", 4]]);
  let previous = orphanChunkSets(input({ chunkSets, nowMs: 0 })).unnamed; // the objects' listing missed it
  let d = orphanChunkSets(input({ chunkSets, namedNuids: new Set(["snap"]), previous, nowMs: 2000 }));
  expect(d.purge).toEqual([]);
  expect(d.unnamed.size).toBe(0);
  previous = d.unnamed;
  d = orphanChunkSets(input({ chunkSets, previous, nowMs: 4000 })); // missed once more: a first sighting again
  expect(d.purge).toEqual([]);
});

test("a sweep looks at most maxSets unnamed sets, timed ones first, so every orphan gets its turn", () => {
  const all = new Map<string, number>(Array.from({ length: 10 }, (_, i) => [`o${i}`, 1]));
  let chunkSets = new Map(all);
  let previous: ReadonlyMap<string, UnnamedChunkSet> = new Map();
  const purged: string[] = [];
  for (let t = 0; purged.length < all.size; t += AGE) {
    expect(t).toBeLessThan(20 * AGE);
    const d = orphanChunkSets(input({ chunkSets, previous, nowMs: t, maxSets: 3 }));
    expect(d.unnamed.size).toBeLessThanOrEqual(3);
    expect(d.purge.length).toBeLessThanOrEqual(3);
    for (const p of d.purge) {
      purged.push(p.nuid);
      chunkSets.delete(p.nuid);
    }
    previous = d.unnamed;
  }
  expect(purged.sort()).toEqual([...all.keys()].sort());
  // No limit at all: nothing is looked at.
  chunkSets = new Map(all);
  expect(sweeps([0, AGE], { chunkSets, maxSets: 0 })).toEqual([[], []]);
});

test("a purge that failed is retried by the next sweep without waiting the age again", () => {
  const chunkSets = new Map([["dead", 3]]);
  const first = orphanChunkSets(input({ chunkSets, nowMs: 0 }));
  const due = orphanChunkSets(input({ chunkSets, previous: first.unnamed, nowMs: AGE }));
  expect(due.purge.map((p) => p.nuid)).toEqual(["dead"]);
  // The purge request failed: the set is still listed at the next sweep.
  const retry = orphanChunkSets(input({ chunkSets, previous: due.unnamed, nowMs: AGE + 1 }));
  expect(retry.purge.map((p) => p.nuid)).toEqual(["dead"]);
});

test("random histories: a set is only purged when unnamed in two sweeps at least the age apart with no chunk written since", () => {
  const rand = mulberry32(7);
  let purges = 0;
  for (let run = 0; run < 200; run++) {
    // Per nuid: its chunk count, when that last changed, and whether an object names it.
    const counts = new Map<string, number>();
    const changedAt = new Map<string, number>();
    const named = new Set<string>();
    const purgedSets = new Set<string>();
    let previous: ReadonlyMap<string, UnnamedChunkSet> = new Map();
    for (let t = 0; t < 30 * AGE; t += Math.floor(rand() * AGE)) {
      for (let i = 0; i < 6; i++) {
        // A purged set is gone for good: the object store never reuses a nuid.
        const nuid = `n${i}`;
        if (purgedSets.has(nuid)) continue;
        if (rand() < 0.2) {
          counts.set(nuid, (counts.get(nuid) ?? 0) + 1);
          changedAt.set(nuid, t);
        }
        if (rand() < 0.05) named.add(nuid);
        else if (rand() < 0.05) named.delete(nuid);
      }
      const d = orphanChunkSets(input({ chunkSets: counts, namedNuids: named, previous, nowMs: t, maxSets: 4 }));
      for (const p of d.purge) {
        expect(named.has(p.nuid)).toBe(false);
        expect(previous.has(p.nuid)).toBe(true);
        expect(t - changedAt.get(p.nuid)!).toBeGreaterThanOrEqual(AGE);
        counts.delete(p.nuid);
        purgedSets.add(p.nuid);
        purges++;
      }
      previous = d.unnamed;
    }
  }
  expect(purges).toBeGreaterThan(100); // the rule is not vacuously safe
});
