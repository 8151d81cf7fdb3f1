// What the Vercel AI SDK scripts share: `streamText` with a provider's model, its text deltas
// collected. A failed call prints what the SDK reported (AI_APICallError carries the status and
// the body) as {error: {name, message, statusCode, responseBody}} and exits with 1.
import { streamText } from "ai";

export async function streamOrExit(model, prompt) {
  let failure = null;
  const result = streamText({
    model,
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
  return { result, text, deltas };
}
