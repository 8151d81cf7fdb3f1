// The seed use case: the Vercel AI SDK's OpenAI provider, pointed at a base URL, streaming text.
// `streamText` with `openai(model)` calls the Responses API (`POST {baseURL}/responses`, streamed).
//
//   node vercel_stream.mjs <baseURL> [prompt]        (or RELAYLOG_BASE_URL=... node vercel_stream.mjs)
//
// Environment: OPENAI_API_KEY (provider key, default "sk-test"), HELICONE_AUTH (the value of the
// Helicone-Auth header, default "Bearer relaylog-test"), HELICONE_REQUEST_ID (sent as
// Helicone-Request-Id when set), MODEL (default "gpt-4o").
// Prints one JSON object: text, deltas, finishReason, usage, providerMetadata, response {id,
// modelId, timestamp, headers} and heliconeId (the `helicone-id` response header, or null).
// A failed call prints {error: {name, message, statusCode, responseBody}} and exits with 1.
import { createOpenAI } from "@ai-sdk/openai";
import { streamOrExit } from "./stream_text.mjs";

const baseURL = process.argv[2] ?? process.env.RELAYLOG_BASE_URL;
if (!baseURL) {
  console.error("usage: node vercel_stream.mjs <baseURL> [prompt]");
  process.exit(2);
}
const prompt = process.argv[3] ?? "Say hello";

const headers = {
  "Helicone-Auth": process.env.HELICONE_AUTH ?? "Bearer relaylog-test",
  "Helicone-Property-App": "vercel-seed",
};
if (process.env.HELICONE_REQUEST_ID) headers["Helicone-Request-Id"] = process.env.HELICONE_REQUEST_ID;

const openai = createOpenAI({ baseURL, apiKey: process.env.OPENAI_API_KEY ?? "sk-test", headers });

const { result, text, deltas } = await streamOrExit(openai(process.env.MODEL ?? "gpt-4o"), prompt);

const response = await result.response;
const responseHeaders = { ...(response.headers ?? {}) };
const heliconeId = responseHeaders["helicone-id"] ?? null;
delete responseHeaders["helicone-id"];

console.log(
  JSON.stringify({
    text,
    deltas,
    finishReason: await result.finishReason,
    usage: await result.usage,
    providerMetadata: (await result.providerMetadata) ?? null,
    response: {
      id: response.id,
      modelId: response.modelId,
      timestamp: response.timestamp,
      headers: responseHeaders,
    },
    heliconeId,
  }),
);
