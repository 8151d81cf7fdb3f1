// A request's prompt and answer as messages, for every provider format relaylog relays: OpenAI chat
// and Responses, Anthropic messages, Gemini, Bedrock (Converse and the InvokeModel bodies of its
// model families); whole bodies or streams put back together from SSE (a Bedrock event stream is
// recorded as SSE text, one event per frame).
import { h } from "./dom.js";

export function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

function sseEvents(text) {
  const events = [];
  for (const block of (text || "").split(/\r?\n\r?\n/)) {
    let name = null;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length) continue;
    const joined = data.join("\n");
    events.push({ name, data: joined === "[DONE]" ? null : parseJSON(joined) });
  }
  return events;
}

function mediaThumb(url, label) {
  if (typeof url === "string" && url.startsWith("data:image/")) return h("img", { className: "thumb", src: url, alt: label || "image" });
  // Remote images are not fetched (the page loads nothing from elsewhere): show where it was.
  return h("div", { className: "tool-call" }, "[image] " + (typeof url === "string" ? url.slice(0, 200) : ""));
}

function partNodes(part) {
  if (typeof part === "string") return [h("div", { className: "text" }, part)];
  if (!part || typeof part !== "object") return [h("div", { className: "text" }, JSON.stringify(part))];
  if (typeof part.text === "string" && !part.functionCall) return [h("div", { className: "text" }, part.text)];
  const type = part.type;
  if (type === "image_url") return [mediaThumb(part.image_url && part.image_url.url)];
  if (type === "input_image") return [mediaThumb(part.image_url)];
  if (type === "image" && part.source) {
    const src = part.source.type === "base64" ? `data:${part.source.media_type};base64,${part.source.data}` : part.source.url;
    return [mediaThumb(src)];
  }
  if (part.inlineData) {
    const mime = part.inlineData.mimeType || "";
    return [mime.startsWith("image/") ? mediaThumb(`data:${mime};base64,${part.inlineData.data}`) : h("div", { className: "tool-call" }, `[${mime || "file"}]`)];
  }
  if (type === "input_audio") return [h("div", { className: "tool-call" }, "[audio]")];
  if (type === "tool_use" || part.functionCall) {
    const call = part.functionCall || part;
    return [h("div", { className: "tool-call" }, `tool call ${call.name}(${JSON.stringify(call.input ?? call.args ?? {}, null, 1)})`)];
  }
  if (type === "tool_result" || part.functionResponse) {
    const content = part.content ?? (part.functionResponse && part.functionResponse.response);
    return [h("div", { className: "tool-call" }, "tool result: " + (typeof content === "string" ? content : JSON.stringify(content, null, 1)))];
  }
  if (type === "thinking") return [h("div", { className: "text muted" }, part.thinking || "")];
  if (!type) {
    const bedrock = bedrockPart(part);
    if (bedrock) return bedrock;
  }
  return [h("div", { className: "tool-call" }, JSON.stringify(part, null, 1))];
}

// A Bedrock Converse content block, named by its one key ({toolUse: {...}}, {image: {...}}).
function bedrockPart(part) {
  if (part.toolUse) return [h("div", { className: "tool-call" }, `tool call ${part.toolUse.name}(${JSON.stringify(part.toolUse.input ?? {}, null, 1)})`)];
  if (part.toolResult) {
    const content = (part.toolResult.content || []).map((c) => (typeof c.text === "string" ? c.text : JSON.stringify(c.json ?? c))).join("\n");
    return [h("div", { className: "tool-call" }, "tool result: " + content)];
  }
  if (part.image && part.image.source && typeof part.image.source.bytes === "string") {
    return [mediaThumb(`data:image/${part.image.format};base64,${part.image.source.bytes}`)];
  }
  for (const media of ["image", "document", "video", "audio"]) if (part[media]) return [h("div", { className: "tool-call" }, `[${media}]`)];
  if (part.reasoningContent) {
    const reasoning = part.reasoningContent.reasoningText;
    return [h("div", { className: "text muted" }, (reasoning && reasoning.text) || "")];
  }
  if (part.cachePoint) return [];
  return null;
}

function contentNodes(content) {
  if (content === null || content === undefined) return [];
  if (Array.isArray(content)) return content.flatMap(partNodes);
  return partNodes(content);
}

function message(role, nodes) {
  const kind = role.startsWith("tool") ? "tool" : role === "model" ? "assistant" : role;
  return h("div", { className: "msg " + kind }, h("div", { className: "role" }, role), nodes);
}

export function requestMessages(body) {
  const out = [];
  const system = body.system ?? body.instructions;
  if (system !== undefined) out.push(message("system", contentNodes(system)));
  const gemSystem = body.systemInstruction || body.system_instruction;
  if (gemSystem) out.push(message("system", contentNodes(gemSystem.parts)));
  const list = body.messages || body.contents || (Array.isArray(body.input) ? body.input : null);
  if (typeof body.input === "string") out.push(message("user", contentNodes(body.input)));
  for (const m of list || []) {
    if (m.type === "function_call") {
      out.push(message("assistant", [h("div", { className: "tool-call" }, `tool call ${m.name}(${m.arguments})`)]));
      continue;
    }
    if (m.type === "function_call_output") {
      out.push(message("tool", [h("div", { className: "tool-call" }, "tool result: " + m.output)]));
      continue;
    }
    const nodes = contentNodes(m.content ?? m.parts);
    for (const call of m.tool_calls || []) nodes.push(h("div", { className: "tool-call" }, `tool call ${call.function.name}(${call.function.arguments})`));
    out.push(message(m.role === "tool" ? `tool ${m.tool_call_id || ""}`.trim() : m.role || "user", nodes));
  }
  // Cohere on Bedrock: earlier turns in chat_history, the new one in message.
  for (const turn of Array.isArray(body.chat_history) && typeof body.message === "string" ? body.chat_history : []) {
    out.push(message(turn.role === "CHATBOT" ? "assistant" : "user", contentNodes(turn.message)));
  }
  if (Array.isArray(body.chat_history) && typeof body.message === "string") out.push(message("user", contentNodes(body.message)));
  // Legacy completions; Llama, Mistral and Titan (`inputText`) on Bedrock.
  const prompt = body.prompt ?? body.inputText;
  if (!out.length && typeof prompt === "string") out.push(message("prompt", contentNodes(prompt)));
  return out;
}

// The tools offered with a request, whatever the provider: [{name, description, parameters}].
export function offeredTools(body) {
  const tools = [];
  const listed = body && body.toolConfig && Array.isArray(body.toolConfig.tools) ? body.toolConfig.tools : body && body.tools;
  for (const t of Array.isArray(listed) ? listed : []) {
    if (!t || typeof t !== "object") continue;
    if (t.function) tools.push({ name: t.function.name, description: t.function.description, parameters: t.function.parameters });
    else if (t.toolSpec) tools.push({ name: t.toolSpec.name, description: t.toolSpec.description, parameters: (t.toolSpec.inputSchema || {}).json });
    else if (Array.isArray(t.functionDeclarations || t.function_declarations)) {
      for (const f of t.functionDeclarations || t.function_declarations) tools.push({ name: f.name, description: f.description, parameters: f.parameters });
    } else if (t.name) tools.push({ name: t.name, description: t.description, parameters: t.input_schema || t.parameters });
    else tools.push({ name: t.type || Object.keys(t)[0] || "tool", description: "built-in tool", parameters: null });
  }
  return tools;
}

// The completion as one message, whatever the provider and whether or not it was streamed.
export function completion(text) {
  const whole = parseJSON(text);
  const events = whole ? (Array.isArray(whole) ? whole : [whole]).map((data) => ({ name: null, data })) : sseEvents(text);
  let content = "";
  const calls = new Map();
  const blocks = [];
  const call = (key) => {
    if (!calls.has(key)) calls.set(key, { name: "", args: "" });
    return calls.get(key);
  };
  for (const { name, data } of events) {
    if (!data) continue;
    if (data.choices) {
      for (const choice of data.choices) {
        const part = choice.message || choice.delta || {};
        if (typeof part.content === "string") content += part.content;
        if (typeof part.refusal === "string") content += part.refusal;
        if (typeof choice.text === "string") content += choice.text;
        for (const t of part.tool_calls || []) {
          const c = call(t.index ?? t.id);
          if (t.function && t.function.name) c.name += t.function.name;
          if (t.function && t.function.arguments) c.args += t.function.arguments;
        }
      }
    } else if (data.type === "message" && Array.isArray(data.content)) {
      blocks.push(...data.content);
    } else if (data.type === "content_block_start") {
      const block = data.content_block;
      if (block.type === "tool_use") call("a" + data.index).name = block.name;
      if (block.type === "text") content += block.text || "";
    } else if (data.type === "content_block_delta") {
      const d = data.delta;
      if (d.type === "text_delta") content += d.text;
      if (d.type === "input_json_delta") call("a" + data.index).args += d.partial_json;
    } else if (data.candidates) {
      for (const cand of data.candidates) for (const part of (cand.content && cand.content.parts) || []) {
        if (typeof part.text === "string") content += part.text;
        if (part.functionCall) blocks.push(part);
      }
    } else if (name === "response.output_text.delta" || data.type === "response.output_text.delta") {
      content += data.delta;
    } else if (Array.isArray(data.output) && data.object === "response") {
      for (const item of data.output) {
        for (const c of item.content || []) if (c.type === "output_text") content += c.text;
        if (item.type === "function_call") {
          const c = call(item.id);
          c.name = item.name;
          c.args = item.arguments;
        }
      }
    } else if (data.data && Array.isArray(data.data)) {
      content += `[${data.data.length} embedding(s)]`;
    } else if (data.error && typeof data.error.message === "string") {
      content += data.error.message;
    } else {
      content += bedrockEvent(name, data, blocks, call);
    }
  }
  const nodes = [];
  if (content) nodes.push(h("div", { className: "text" }, content));
  nodes.push(...blocks.flatMap(partNodes));
  for (const c of calls.values()) nodes.push(h("div", { className: "tool-call" }, `tool call ${c.name}(${c.args})`));
  return nodes.length ? message("assistant", nodes) : h("p", { className: "muted" }, "No completion text (see the raw view).");
}

// A Bedrock answer or stream event: Converse (whole, or its contentBlockStart/Delta events), Nova's
// InvokeModel stream (the same events inside the payload), Llama, Titan, Mistral and Cohere bodies
// and chunks, an exception frame. Returns the text it adds; tool calls and blocks go to `blocks`/`call`.
function bedrockEvent(name, data, blocks, call) {
  if (data.type !== undefined) return ""; // every other format's events that carry no answer (message_stop, response.*.done)
  for (const key of ["contentBlockDelta", "contentBlockStart"]) {
    if (data[key] && typeof data[key] === "object") {
      name = key;
      data = data[key];
    }
  }
  const whole = data.output && data.output.message;
  if (whole && Array.isArray(whole.content)) {
    blocks.push(...whole.content);
    return "";
  }
  if (name === "contentBlockStart" && data.start && data.start.toolUse) {
    call("b" + data.contentBlockIndex).name = data.start.toolUse.name;
    return "";
  }
  if (name === "contentBlockDelta" && data.delta) {
    if (data.delta.toolUse) call("b" + data.contentBlockIndex).args += data.delta.toolUse.input;
    return typeof data.delta.text === "string" ? data.delta.text : "";
  }
  if (name && (name.endsWith("Exception") || name === "error")) return typeof data.message === "string" ? data.message : "";
  for (const key of ["generation", "outputText", "text"]) if (typeof data[key] === "string") return data[key];
  const items = data.results || data.outputs || data.generations;
  if (Array.isArray(items)) return items.map((item) => item.outputText ?? item.text ?? "").join("");
  if (typeof data.message === "string" && Object.keys(data).length === 1) return data.message; // Bedrock's error body
  return "";
}

export function pretty(text) {
  const parsed = parseJSON(text);
  return parsed ? JSON.stringify(parsed, null, 2) : text;
}
