// Entities from nertron's text model on a Triton server, with Node's built-in fetch (Node >= 18).
//
//   node examples/clients/ner.mjs http://127.0.0.1:8000 < texts.json > entities.json
//
// stdin: a JSON array of texts. stdout: a JSON array with, per text, its entities
// ({text, label, start, end, score}; start/end count code points). Requests go 8 at a time,
// one text each: the server batches them (dynamic batching).
import { text } from "node:stream/consumers";

const server = process.argv[2] ?? "http://127.0.0.1:8000";
const aggregation = process.argv[3] ?? "first";
const CONCURRENCY = 8;

async function entities(sentence) {
  const response = await fetch(`${server}/v2/models/nertron_text/infer`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({
      inputs: [{ name: "TEXT", shape: [1, 1], datatype: "BYTES", data: [sentence] }],
      parameters: { aggregation },
    }),
  });
  const reply = await response.json();
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${reply.error}`);
  const output = reply.outputs.find((o) => o.name === "ENTITIES");
  return JSON.parse(output.data[0]);
}

const texts = JSON.parse(await text(process.stdin));
const results = new Array(texts.length);
let next = 0;
async function worker() {
  while (next < texts.length) {
    const index = next++;
    results[index] = await entities(texts[index]);
  }
}
try {
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
} catch (error) {
  console.error(`ner.mjs: ${error.message}`);
  process.exit(1);
}
process.stdout.write(JSON.stringify(results));
