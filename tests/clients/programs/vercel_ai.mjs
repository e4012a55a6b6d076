// Vercel AI SDK: the default `openai(model)` provider (Responses API), configured only by
// OPENAI_BASE_URL / OPENAI_API_KEY. Prints JSON. Run by tests/clients from .governor/clients.
import { openai } from '@ai-sdk/openai';
import { generateObject, generateText, streamText } from 'ai';
import { z } from 'zod';

const model = openai(process.env.MODEL);
const headers = { 'X-Governor-Session-ID': process.env.SESSION_ID };
const text = await generateText({ model, prompt: 'say hello', headers });
const stream = streamText({ model, prompt: 'tell a story', headers });
let streamed = '';
for await (const delta of stream.textStream) streamed += delta;
const usage = await stream.usage;
const object = await generateObject({
  model, headers, prompt: 'the biggest city',
  schema: z.object({ city: z.string(), population: z.number().int().min(1) }),
});
console.log(JSON.stringify({ text: text.text, textUsage: text.usage, streamed, usage,
                             object: object.object }));
