/** @type {import('jest').Config} */
module.exports = {
  testEnvironment: "node",
  roots: ["<rootDir>/test"],
  testMatch: ["**/*.test.ts"],
  transform: {
    // Type checking happens once in `npm run build` (tsc); jest only transpiles.
    "^.+\\.ts$": ["ts-jest", { diagnostics: false }],
  },
  // Integration tests start real nats-server and node processes; two cores
  // cannot run several clusters at once without timing noise.
  maxWorkers: 1,
  testTimeout: 120000,
};
