/** The seeded PRNG the fault injector uses; one seed reproduces a whole run. */
export { mulberry32 } from "../../src/client/faults";
