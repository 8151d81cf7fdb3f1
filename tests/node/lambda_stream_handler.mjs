// A response-streaming handler run by AWS's own Node.js runtime client (aws-lambda-ric), so the
// tests can check that the Runtime API emulator reads the wire format as AWS's client writes it.
// The event's body says what to send: {status, headers, cookies, chunks, delayMs, failAfter}.
export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const spec = JSON.parse(event.body);
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: spec.status,
    headers: spec.headers,
    cookies: spec.cookies,
  });
  for (const [index, chunk] of spec.chunks.entries()) {
    if (spec.failAfter === index) {
      throw new Error(`failed after ${index} chunks`);
    }
    stream.write(chunk);
    await new Promise((resolve) => setTimeout(resolve, spec.delayMs));
  }
  stream.end();
});
