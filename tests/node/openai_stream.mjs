// The OpenAI Node SDK streaming a chat completion.
//
//   node openai_stream.mjs <baseURL> [--usage]       (or RELAYLOG_BASE_URL=... node openai_stream.mjs)
//
// `--usage` asks for `stream_options: { include_usage: true }`. Environment: OPENAI_API_KEY
// (default "sk-test"), HELICONE_REQUEST_ID (sent as Helicone-Request-Id when set), MODEL (default
// "gpt-4o-mini"). Prints one JSON object: chunks (every chunk as received), headers (the response
// headers, without helicone-id) and heliconeId.
import OpenAI from "openai";

const args = process.argv.slice(2);
const baseURL = args.find((arg) => !arg.startsWith("--")) ?? process.env.RELAYLOG_BASE_URL;
if (!baseURL) {
  console.error("usage: node openai_stream.mjs <baseURL> [--usage]");
  process.exit(2);
}
const defaultHeaders = {};
if (process.env.HELICONE_REQUEST_ID) defaultHeaders["Helicone-Request-Id"] = process.env.HELICONE_REQUEST_ID;

const client = new OpenAI({
  baseURL,
  apiKey: process.env.OPENAI_API_KEY ?? "sk-test",
  defaultHeaders,
  maxRetries: 0,
  timeout: 10_000,
});

const request = {
  model: process.env.MODEL ?? "gpt-4o-mini",
  messages: [{ role: "user", content: "Say hello" }],
  stream: true,
};
if (args.includes("--usage")) request.stream_options = { include_usage: true };

const { data: stream, response } = await client.chat.completions.create(request).withResponse();
const chunks = [];
for await (const chunk of stream) chunks.push(chunk);

const headers = Object.fromEntries(response.headers.entries());
const heliconeId = headers["helicone-id"] ?? null;
delete headers["helicone-id"];
console.log(JSON.stringify({ chunks, headers, heliconeId }));
