/**
 * `internvl web`: the demo page on 127.0.0.1 (or another host): the page script, onnxruntime-web's files, and local
 * model folders shared under /models/<name>/ (any static server with range requests would do; the Hub's
 * `resolve/` URLs work as they are). Cross-origin isolated, so onnxruntime-web gets its threads.
 */
import path from 'node:path';
import { onnxruntimeWebDist, pageScript } from './bundle.js';
import { type StaticServer, startStaticServer } from './static_server.js';

export interface DemoServerOptions {
  host?: string;
  port?: number;
  /** Local model folders, shared as /models/<folder name>/. */
  models?: string[];
}

export async function startDemoServer(options: DemoServerOptions = {}): Promise<StaticServer & { models: string[] }> {
  const server = await startStaticServer({ host: options.host, port: options.port });
  server.mount('/ort', onnxruntimeWebDist());
  const models = (options.models ?? []).map((dir) => server.mount(`/models/${path.basename(path.resolve(dir))}`, dir));
  server.put('/demo_page.js', await pageScript('demo_page'));
  server.put('/index.html', demoHtml(models[0] ?? 'OpenGVLab/InternVL2-1B', models));
  return Object.assign(server, { models });
}

const escapeHtml = (text: string) => text.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

function demoHtml(defaultModel: string, models: string[]): string {
  const options = models.map((m) => `<option value="${escapeHtml(m)}">`).join('');
  return `<!doctype html>
<html lang="en"><meta charset="utf-8"><title>internvl-ts in the browser</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 15px/1.4 system-ui, sans-serif; max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; }
  fieldset { border: 1px solid #ccc; border-radius: 6px; margin-bottom: 1rem; }
  #model { width: 28rem; } #question { width: 36rem; }
  #progress div { font-size: 13px; } #progress progress { width: 14rem; vertical-align: middle; }
  #drop { border: 2px dashed #999; border-radius: 6px; padding: 1rem; text-align: center; }
  #preview { max-height: 12rem; display: block; margin: .5rem auto; }
  .turn .q { font-weight: 600; margin-top: .6rem; } .turn .a { white-space: pre-wrap; }
  #status.error { color: #b00020; font-weight: 600; }
</style>
<h1>internvl-ts in the browser</h1>
<p>Everything runs in this tab on onnxruntime-web (<span id="device-used">not started</span>): weights are read from
the model URL with range requests, converted once and kept in the origin's private storage.</p>
<fieldset><legend>Model</legend>
  <input id="model" list="models" value="${escapeHtml(defaultModel)}"><datalist id="models">${options}</datalist>
  <select id="device"><option value="auto">auto</option><option>wasm</option><option>webgpu</option></select>
  LLM <select id="llm"><option>int8</option><option>int4</option><option>int4+int8</option><option>fp32</option></select>
  vision <select id="vision"><option>int8</option><option>fp32</option></select>
  <button id="load">Load</button>
  <div id="progress"></div>
</fieldset>
<fieldset><legend>Image</legend>
  <div id="drop">Drop an image here, or <input id="file" type="file" accept="image/*"></div>
  <img id="preview" alt=""><div id="image-info"></div>
  <button id="features" disabled>InternViT features</button> <code id="features-out"></code>
</fieldset>
<fieldset><legend>Chat</legend>
  <div id="log"></div>
  <input id="question" placeholder="Ask about the image"> max tokens <input id="max-tokens" type="number" value="128" min="1" style="width:5rem">
  <button id="ask" disabled>Ask</button>
</fieldset>
<p id="status"></p>
<script type="module">
  import * as ort from '/ort/ort.webgpu.min.mjs';
  ort.env.wasm.wasmPaths = '/ort/';
  globalThis.ort = ort;
  await import('/demo_page.js');
</script>
</html>
`;
}
