/**
 * The demo page (`internvl web`): everything runs in the tab. Pick a model URL (a Hub repo id, or a folder the
 * server shares under /models/), load it with progress per graph (download, conversion, weight store), drop an
 * image, chat with the answer streaming in; or take the image's InternViT features. The page is plain DOM: the
 * markup is demo_html.ts.
 */
import { InternVLError } from '../../../core/errors.js';
import { type WeightFormat, weightFormatHook } from '../../../core/quantize/formats.js';
import type { RuntimeBackend } from '../../../core/session.js';
import type { RgbImage } from '../../../processing/image.js';
import { type ChatPipeline, Conversation, loadChatPipeline } from '../../../tasks/chat.js';
import { embedImages, loadImageEmbedder } from '../../../tasks/embed.js';
import { loadBrowserImage } from '../../../web/image_decode.js';
import { modelFits } from '../../../web/memory.js';
import { useBrowserPlatform } from '../../../web/platform.js';
import type { WebDevice, WeightProgress } from '../../../web/runtime.js';

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

let chat: { pipeline: ChatPipeline; conversation: Conversation; url: string } | null = null;
let image: RgbImage | null = null;
let platform: Promise<{ device: WebDevice; threads: number }> | null = null;

/** One `<progress>` per graph, created as its first event arrives. */
function showProgress(event: WeightProgress): void {
  let row = document.querySelector<HTMLElement>(`[data-graph="${CSS.escape(event.graph)}"]`);
  if (!row) {
    row = document.createElement('div');
    row.dataset.graph = event.graph;
    row.innerHTML = '<span class="name"></span> <progress max="1"></progress> <span class="what"></span>';
    row.querySelector('.name')!.textContent = event.graph;
    $('progress').append(row);
  }
  row.querySelector('progress')!.value = event.bytes / Math.max(event.totalBytes, 1);
  const verb = { read: 'downloading', convert: 'converting', store: 'from the weight store' }[event.kind];
  row.querySelector('.what')!.textContent =
    `${event.done}/${event.total} weights, ${(event.bytes / 2 ** 20).toFixed(0)} of ${(event.totalBytes / 2 ** 20).toFixed(0)} MiB (${verb})`;
}

function status(text: string, error = false): void {
  const line = $('status');
  line.textContent = text;
  line.className = error ? 'error' : '';
}

/** A user error (model, image, "does not fit") as its one-line message; anything else with its name. */
function describe(error: unknown): string {
  return error instanceof InternVLError ? error.message : `${(error as Error).name}: ${(error as Error).message}`;
}

function setupPlatform(
  ort: RuntimeBackend['ort'],
  device: WebDevice | 'auto',
): Promise<{ device: WebDevice; threads: number }> {
  platform ??= useBrowserPlatform(ort, { device, onProgress: showProgress });
  return platform;
}

async function loadModel(): Promise<void> {
  const url = $<HTMLInputElement>('model').value.trim();
  const llm = $<HTMLSelectElement>('llm').value as WeightFormat;
  const vision = $<HTMLSelectElement>('vision').value as WeightFormat;
  const ort = (globalThis as unknown as { ort: RuntimeBackend['ort'] }).ort;
  $('progress').replaceChildren();
  try {
    const { device, threads } = await setupPlatform(ort, $<HTMLSelectElement>('device').value as WebDevice | 'auto');
    $('device-used').textContent =
      `${device}${device === 'wasm' ? `, ${threads} thread${threads > 1 ? 's' : ''}` : ''}`;
    const fit = await modelFits(url, { llm, vision, device });
    if (!fit.fits) throw new InternVLError(fit.message);
    status(`loading ${url} (${fit.message})…`);
    await chat?.pipeline.model.release();
    chat = null;
    const started = performance.now();
    const pipeline = await loadChatPipeline(url, {
      configureLlmGraph: weightFormatHook(llm),
      configureVisionGraph: weightFormatHook(vision),
    });
    chat = { pipeline, conversation: new Conversation(pipeline), url };
    if (image) chat.conversation.setVisuals({ images: [image], maxTiles: 6 });
    status(`${url} loaded in ${((performance.now() - started) / 1000).toFixed(1)} s`);
    $<HTMLButtonElement>('ask').disabled = false;
  } catch (error) {
    status(describe(error), true);
  }
}

async function takeImage(file: File): Promise<void> {
  try {
    image = await loadBrowserImage(file);
    $<HTMLImageElement>('preview').src = URL.createObjectURL(file);
    $('image-info').textContent = `${file.name}: ${image.width}×${image.height}`;
    if (chat) {
      chat.conversation = new Conversation(chat.pipeline);
      chat.conversation.setVisuals({ images: [image], maxTiles: 6 });
      $('log').replaceChildren();
    }
    $<HTMLButtonElement>('features').disabled = false;
  } catch (error) {
    status(describe(error), true);
  }
}

async function ask(): Promise<void> {
  const question = $<HTMLInputElement>('question').value.trim();
  if (!chat || !question) return;
  const turn = document.createElement('div');
  turn.className = 'turn';
  turn.innerHTML = '<div class="q"></div><div class="a"></div>';
  turn.querySelector('.q')!.textContent = question;
  $('log').append(turn);
  const answer = turn.querySelector<HTMLElement>('.a')!;
  $<HTMLButtonElement>('ask').disabled = true;
  try {
    const stream = chat.conversation.stream(question, {
      maxNewTokens: Number($<HTMLInputElement>('max-tokens').value),
    });
    for (;;) {
      const next = await stream.next();
      if (next.done) {
        // The turn's response as the official chat() returns it (stripped), which the deltas only approach.
        answer.textContent = next.value.response;
        answer.dataset.done = next.value.finishReason;
        break;
      }
      answer.textContent += next.value;
    }
  } catch (error) {
    status(describe(error), true);
  } finally {
    $<HTMLButtonElement>('ask').disabled = false;
  }
}

/** The image's InternViT embedding (the CLS token of the vision tower of the model URL given). */
async function features(): Promise<void> {
  if (!image) return;
  const url = $<HTMLInputElement>('model').value.trim();
  try {
    await setupPlatform((globalThis as unknown as { ort: RuntimeBackend['ort'] }).ort, 'auto');
    status(`InternViT features of ${url}…`);
    const embedder = await loadImageEmbedder(url);
    try {
      const { data } = await embedImages(embedder, [image]);
      const norm = Math.sqrt(data.reduce((sum, v) => sum + v * v, 0));
      $('features-out').textContent =
        `dim ${data.length}, L2 norm ${norm.toFixed(4)}: [${Array.from(data.subarray(0, 8), (v) => v.toFixed(4)).join(', ')}, …]`;
      status('features done');
    } finally {
      await embedder.release();
    }
  } catch (error) {
    status(describe(error), true);
  }
}

$('load').addEventListener('click', () => void loadModel());
$('ask').addEventListener('click', () => void ask());
$('question').addEventListener('keydown', (e) => {
  if ((e as KeyboardEvent).key === 'Enter') void ask();
});
$('features').addEventListener('click', () => void features());
$<HTMLInputElement>('file').addEventListener('change', (e) => {
  const file = (e.target as HTMLInputElement).files?.[0];
  if (file) void takeImage(file);
});
const drop = $('drop');
drop.addEventListener('dragover', (e) => e.preventDefault());
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  const file = (e as DragEvent).dataTransfer?.files[0];
  if (file) void takeImage(file);
});
document.body.dataset.ready = '1';
