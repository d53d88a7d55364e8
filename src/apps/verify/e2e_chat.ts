/**
 * Runner for InternVL-Chat end-to-end folders (`chat_e2e`): the user's chat through the task code the CLI uses
 * (`Conversation`: photo → tiles → prompt with the template and history → tokenizer → model → greedy decoding with
 * the KV cache → decoded response), every turn of `meta.chat.turns`. Token ids must match exactly, except from a
 * step whose golden top-2 margin is below 1e-3: there a tie-level difference is allowed and the check stops.
 */
import { agreeingPrefix, compareValues, EXACT_BOUND } from './compare.js';
import type { ComparedTensor, SkippedTensor } from './compare.js';
import { baseName } from './fixture.js';
import type { FixtureRunner } from './registry.js';
import { ModelLoadError } from '../../core/errors.js';
import { architectureOf } from '../../models/registry.js';
import { loadImage } from '../../processing/image.js';
import { preprocessForChat } from '../../processing/tiling.js';
import { Conversation, loadChatPipeline } from '../../tasks/chat.js';

interface ChatMeta {
  chat: {
    image: { file: string; max_num: number };
    generation_config: { max_new_tokens: number };
    turns: Array<{ question: string; response: string; greedy_top2_margins?: number[] }>;
  };
}

/** Below this golden top-2 margin two implementations may legitimately pick different tokens. */
const TIE_MARGIN = 1e-3;

export const chatE2eRunner: FixtureRunner = {
  name: 'internvl_chat_e2e',
  matches(fixture) {
    if (!fixture.config || fixture.goldenDir === fixture.dir) return false;
    return architectureOf(fixture.config).capabilities.includes('chat');
  },
  async run(fixture, options) {
    const meta = (fixture.meta as unknown as ChatMeta).chat;
    if (!meta?.turns) throw new ModelLoadError(`${fixture.goldenDir}/meta.json: no chat section`);
    const pipeline = await loadChatPipeline(fixture.dir, {
      session: { threads: options.threads },
      configureLlmGraph: options.graphs?.llm,
      configureVisionGraph: options.graphs?.vision,
    });
    const compared: ComparedTensor[] = [];
    const skipped: SkippedTensor[] = [];
    try {
      const image = await loadImage(fixture.goldenPath('images', baseName(meta.image.file)));
      const { model } = pipeline;
      const tiling = {
        minTiles: model.config.minDynamicPatch,
        maxTiles: meta.image.max_num,
        tileSize: model.config.imageSize,
        useThumbnail: model.config.useThumbnail,
      };
      const { pixelValues, numTiles } = preprocessForChat(image, tiling);
      const [meanTensor, stdTensor] = tileStatistics(pixelValues, numTiles, model.config.imageSize);
      compared.push(fixture.compare('out.tiles.channel_mean', { data: meanTensor, shape: [numTiles, 3] }));
      compared.push(fixture.compare('out.tiles.channel_std', { data: stdTensor, shape: [numTiles, 3] }));
      const features = await model.extractFeature(pixelValues, numTiles);
      compared.push(fixture.compare('out.vit_embeds', { data: features.data, shape: features.dims }));

      const conversation = new Conversation(pipeline);
      conversation.setVisuals({ images: [image], maxTiles: meta.image.max_num });
      for (const [index, turn] of meta.turns.entries()) {
        const name = `turn${index + 1}`;
        const promptIds = pipeline.tokenizer.encode(conversation.promptFor(turn.question));
        compared.push(
          fixture.compare(`in.${name}.input_ids`, { data: promptIds, shape: [1, promptIds.length] }, EXACT_BOUND),
        );
        const steps = fixture.entry(`out.${name}.generated_ids`).shape[1];
        const top5Ids: number[] = [];
        const top5Logits: number[] = [];
        const result = await conversation.ask(turn.question, {
          maxNewTokens: meta.generation_config.max_new_tokens,
          onLogits: (_, __, row) => {
            const best = topFive(row);
            top5Ids.push(...best);
            top5Logits.push(...best.map((id) => row[id]));
          },
        });
        const golden = Array.from(fixture.tensor(`out.${name}.generated_ids`).data);
        const margins = turn.greedy_top2_margins ?? [];
        const tie = margins.findIndex((m) => m < TIE_MARGIN);
        const checked = tie >= 0 ? tie + 1 : steps;
        if (tie >= 0)
          skipped.push({
            name: `out.${name}.generated_ids[${checked}:]`,
            reason: `golden top-2 margin ${margins[tie].toExponential(2)} < ${TIE_MARGIN} at step ${tie + 1}`,
          });
        compared.push(
          compareValues(
            `out.${name}.generated_ids${checked < steps ? `[:${checked}]` : ''}`,
            result.ids.slice(0, checked),
            golden.slice(0, checked),
          ),
        );
        // Past a near-tie the two runs may decode different tokens, and past a differing token the contexts differ:
        // every per-step golden on its first rows only, up to and including the first differing token.
        const done = Math.min(checked, result.ids.length, agreeingPrefix(result.ids, golden) + 1);
        compared.push(
          fixture.compareRows(
            `out.${name}.step_top5_ids`,
            { data: top5Ids.slice(0, 5 * done), shape: [done, 5] },
            EXACT_BOUND,
          ),
        );
        compared.push(
          fixture.compareRows(`out.${name}.step_top5_logits`, {
            data: top5Logits.slice(0, 5 * done),
            shape: [done, 5],
          }),
        );
        if (tie < 0) {
          const codes = (text: string) => Array.from(text, (c) => c.codePointAt(0)!);
          compared.push(compareValues(`meta.${name}.response`, codes(result.response), codes(turn.response)));
        }
      }
    } finally {
      await pipeline.model.release();
    }
    return { compared, skipped };
  },
};

/** Ids of the 5 largest logits, best first (ties: lower id first). */
function topFive(row: Float32Array): number[] {
  const best: number[] = [];
  for (let i = 0; i < row.length; i++) {
    if (best.length < 5 || row[i] > row[best[4]]) {
      best.push(i);
      best.sort((a, b) => row[b] - row[a] || a - b);
      if (best.length > 5) best.pop();
    }
  }
  return best;
}

/** Per tile and channel: mean and (unbiased, as torch.std) standard deviation of the normalized pixels. */
function tileStatistics(pixels: Float32Array, tiles: number, size: number): [Float32Array, Float32Array] {
  const mean = new Float32Array(tiles * 3);
  const std = new Float32Array(tiles * 3);
  const n = size * size;
  for (let t = 0; t < tiles; t++) {
    for (let c = 0; c < 3; c++) {
      const plane = pixels.subarray((t * 3 + c) * n, (t * 3 + c + 1) * n);
      let sum = 0;
      for (const v of plane) sum += v;
      const m = sum / n;
      let squares = 0;
      for (const v of plane) squares += (v - m) ** 2;
      mean[t * 3 + c] = m;
      std[t * 3 + c] = Math.sqrt(squares / (n - 1));
    }
  }
  return [mean, std];
}
