// The Vercel AI SDK's Amazon Bedrock provider, pointed at a base URL, streaming text with
// `streamText` (ConverseStream: `POST {baseURL}/model/{modelId}/converse-stream`, an AWS event stream).
//
//   node bedrock_stream.mjs <baseURL> [prompt]
//
// Environment: BEDROCK_API_KEY (a Bedrock API key, sent as Authorization: Bearer) or
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN (the SDK signs with SigV4);
// AWS_REGION (default us-east-1); HELICONE_AUTH (the Helicone-Auth header, sent when set);
// HELICONE_REQUEST_ID; MODEL (default us.amazon.nova-lite-v1:0).
// Prints one JSON object: text, deltas, finishReason, usage, heliconeId (the `helicone-id`
// response header, or null). A failed call prints {error: {name, message, statusCode, responseBody}}
// and exits 1.
import { createAmazonBedrock } from "@ai-sdk/amazon-bedrock";
import { streamOrExit } from "./stream_text.mjs";

const baseURL = process.argv[2];
if (!baseURL) {
  console.error("usage: node bedrock_stream.mjs <baseURL> [prompt]");
  process.exit(2);
}
const headers = {};
if (process.env.HELICONE_AUTH) headers["Helicone-Auth"] = process.env.HELICONE_AUTH;
if (process.env.HELICONE_REQUEST_ID) headers["Helicone-Request-Id"] = process.env.HELICONE_REQUEST_ID;

const bedrock = createAmazonBedrock({
  baseURL,
  region: process.env.AWS_REGION ?? "us-east-1",
  apiKey: process.env.BEDROCK_API_KEY || undefined,
  accessKeyId: process.env.AWS_ACCESS_KEY_ID,
  secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
  sessionToken: process.env.AWS_SESSION_TOKEN || undefined,
  headers,
});

const model = bedrock(process.env.MODEL ?? "us.amazon.nova-lite-v1:0");
const { result, text, deltas } = await streamOrExit(model, process.argv[3] ?? "Say hello");

const response = await result.response;
console.log(
  JSON.stringify({
    text,
    deltas,
    finishReason: await result.finishReason,
    usage: await result.usage,
    heliconeId: (response.headers ?? {})["helicone-id"] ?? null,
  }),
);
