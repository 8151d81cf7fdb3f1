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
import { streamText } from "ai";

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

let failure = null;
const result = streamText({
  model: openai(process.env.MODEL ?? "gpt-4o"),
  prompt,
  maxRetries: 0,
  onError: ({ error }) => {
    failure = error;
  },
});

let text = "";
const deltas = [];
for await (const delta of result.textStream) {
  text += delta;
  deltas.push(delta);
}
if (failure) {
  // A failed call prints what the SDK reported (AI_APICallError carries status and body), exit 1.
  console.log(
    JSON.stringify({
      error: {
        name: failure?.name ?? null,
        message: failure?.message ?? String(failure),
        statusCode: failure?.statusCode ?? null,
        responseBody: failure?.responseBody ?? null,
      },
    }),
  );
  console.error(String(failure?.stack ?? failure));
  process.exit(1);
}

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
