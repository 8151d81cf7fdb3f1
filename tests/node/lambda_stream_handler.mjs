// A response-streaming handler run by AWS's own Node.js runtime client (aws-lambda-ric), so the
// tests can check that the Runtime API emulator reads the wire format as AWS's client writes it.
// The event's body (JSON) says what to send: {status, headers, cookies, chunks, delayMs, failAfter};
// failAfter = n throws once n chunks are written (0: before the first byte, chunks.length: before end).
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const spec = JSON.parse(event.body);
  const failIfDue = (written) => {
    if (spec.failAfter === written) {
      throw new Error(`failed after ${written} chunks`);
    }
  };
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: spec.status,
    headers: spec.headers,
    cookies: spec.cookies,
  });
  for (const [written, chunk] of spec.chunks.entries()) {
    failIfDue(written);
    stream.write(chunk);
    await sleep(spec.delayMs ?? 0);
  }
  failIfDue(spec.chunks.length);
  stream.end();
});
