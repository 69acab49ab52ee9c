// The official `openai` npm package, unchanged, against a running Tokaroo.
//
// Run by tests/it/sdk_clients.rs with TOKAROO_BASE_URL (".../v1") and TOKAROO_KEY set. Prints
// one "ok <check>" line per check; a failure throws, which exits non-zero with its stack.
import assert from "node:assert/strict";
import OpenAI from "openai";

const baseURL = process.env.TOKAROO_BASE_URL;
const client = new OpenAI({ baseURL, apiKey: process.env.TOKAROO_KEY, maxRetries: 0 });

const weatherTool = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Current weather for a city",
    parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] },
  },
};

async function check(name, fn) {
  await fn();
  console.log(`ok ${name}`);
}

await check("plain", async () => {
  const { data, response } = await client.chat.completions
    .create({ model: "auto", messages: [{ role: "user", content: "Say hello" }] })
    .withResponse();
  assert.equal(data.model, "auto");
  assert.equal(data.choices[0].message.role, "assistant");
  assert.ok(data.choices[0].message.content);
  assert.equal(data.choices[0].finish_reason, "stop");
  assert.ok(data.usage.total_tokens > 0);
  assert.ok(Number(response.headers.get("x-tokaroo-cost")) >= 0);
  assert.equal(response.headers.get("x-tokaroo-cache"), "miss");
});

await check("stream", async () => {
  const stream = await client.chat.completions.create({
    model: "fast",
    messages: [{ role: "user", content: "Count to three" }],
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = "";
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.model, "fast");
    if (chunk.choices.length) {
      text += chunk.choices[0].delta.content ?? "";
      finish = chunk.choices[0].finish_reason ?? finish;
    }
    usage = chunk.usage ?? usage;
  }
  assert.ok(text);
  assert.equal(finish, "stop");
  assert.ok(usage.completion_tokens > 0);
});

await check("tool round trip", async () => {
  const messages = [{ role: "user", content: "What is the weather in Paris?" }];
  const first = await client.chat.completions.create({ model: "auto", messages, tools: [weatherTool] });
  const choice = first.choices[0];
  assert.equal(choice.finish_reason, "tool_calls");
  const call = choice.message.tool_calls[0];
  assert.equal(call.function.name, "get_weather");
  assert.equal(typeof JSON.parse(call.function.arguments), "object");
  messages.push(choice.message);
  messages.push({ role: "tool", tool_call_id: call.id, content: JSON.stringify({ temp_c: 21 }) });
  const second = await client.chat.completions.create({ model: "auto", messages, tools: [weatherTool] });
  assert.ok(second.choices[0].message.content);
});

await check("streamed tool call", async () => {
  // The SDK's own helper assembles streamed tool-call fragments.
  const runner = client.chat.completions.stream({
    model: "auto",
    messages: [{ role: "user", content: "Weather in Oslo?" }],
    tools: [weatherTool],
    tool_choice: "required",
  });
  const final = await runner.finalChatCompletion();
  const call = final.choices[0].message.tool_calls[0];
  assert.equal(call.function.name, "get_weather");
  assert.equal(typeof JSON.parse(call.function.arguments), "object");
  assert.equal(final.choices[0].finish_reason, "tool_calls");
});

await check("embeddings", async () => {
  const result = await client.embeddings.create({ model: "text-embedding-3-small", input: ["alpha", "beta"] });
  assert.deepEqual(result.data.map((d) => d.index), [0, 1]);
  for (const d of result.data) assert.equal(d.embedding.length, 1536);
});

await check("images", async () => {
  const { data, response } = await client.images
    .generate({ model: "auto", prompt: "A lighthouse at dusk", size: "1024x1024", response_format: "b64_json", n: 2 })
    .withResponse();
  assert.equal(data.data.length, 2);
  assert.deepEqual([...Buffer.from(data.data[0].b64_json, "base64").subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
  assert.ok(Number(response.headers.get("x-tokaroo-cost")) > 0);
  const byUrl = await client.images.generate({ model: "max", prompt: "A lighthouse at dusk", size: "1792x1024", quality: "hd" });
  const image = await fetch(byUrl.data[0].url);
  assert.equal(image.headers.get("content-type"), "image/png");
  assert.deepEqual([...new Uint8Array(await image.arrayBuffer()).subarray(0, 4)], [0x89, 0x50, 0x4e, 0x47]);
  await assert.rejects(client.images.generate({ prompt: "x", size: "999x999" }), (e) => e.status === 400 && /size/.test(e.message));
});

await check("speech", async () => {
  const mp3 = await client.audio.speech.create({ model: "auto", voice: "nova", input: "Hello, welcome to Tokaroo!" });
  assert.equal(mp3.headers.get("content-type"), "audio/mpeg");
  assert.ok((await mp3.arrayBuffer()).byteLength > 0);
  const wav = await client.audio.speech.create({ model: "fast", voice: "alloy", input: "Hi", response_format: "wav" });
  assert.equal(Buffer.from(await wav.arrayBuffer()).subarray(0, 4).toString(), "RIFF");
});

await check("transcription", async () => {
  const file = await OpenAI.toFile(Buffer.alloc(32000), "call.mp3", { type: "audio/mpeg" });
  const result = await client.audio.transcriptions.create({ model: "auto", file, language: "en" });
  assert.ok(result.text.startsWith("[simulated]"), result.text);
  const again = await OpenAI.toFile(Buffer.alloc(32000), "call.mp3", { type: "audio/mpeg" });
  const vtt = await client.audio.transcriptions.create({ model: "auto", file: again, response_format: "vtt" });
  assert.ok(vtt.startsWith("WEBVTT"), vtt);
});

await check("models", async () => {
  const ids = new Set();
  for await (const model of client.models.list()) ids.add(model.id);
  for (const mode of ["auto", "fast", "max"]) assert.ok(ids.has(mode), mode);
});

await check("errors", async () => {
  await assert.rejects(
    client.chat.completions.create({ model: "auto", messages: [{ role: "user", content: "x" }], temperature: 5 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && /temperature/.test(e.message),
  );
  const badKey = new OpenAI({ baseURL, apiKey: "tok_not_a_real_key", maxRetries: 0 });
  await assert.rejects(
    badKey.chat.completions.create({ model: "auto", messages: [{ role: "user", content: "x" }] }),
    (e) => e instanceof OpenAI.AuthenticationError && e.status === 401,
  );
});

await check("knowledge context", async () => {
  // A memory written through Tokaroo's own route, then a chat that opts in to context with
  // the extension field (the SDK sends fields it does not know as they are).
  const note = await fetch(`${baseURL}/memory/notes`, {
    method: "POST",
    headers: { Authorization: `Bearer ${process.env.TOKAROO_KEY}`, "Content-Type": "application/json" },
    body: JSON.stringify({ content: "The deploy freeze starts on December 20." }),
  });
  assert.equal(note.status, 200);
  const completion = await client.chat.completions.create({
    model: "auto",
    messages: [{ role: "user", content: "When does the deploy freeze start?" }],
    tokaroo: { context: { max_tokens: 200 } },
  });
  assert.equal(completion.tokaroo.context.memories.length, 1);
  assert.ok(completion.tokaroo.context.used_tokens <= 200);
  const stream = await client.chat.completions.create({
    model: "auto",
    messages: [{ role: "user", content: "When does the deploy freeze start?" }],
    tokaroo: { context: true },
    stream: true,
  });
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  // The context rides on the first chunk, which has a choice like any other.
  assert.equal(chunks[0].choices.length, 1);
  assert.ok(chunks[0].x_tokaroo.context.memories.length >= 1);
});
