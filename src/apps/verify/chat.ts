/**
 * Runner for InternVL-Chat model fixtures (`chat_qwen2`, `chat_llama`, `chat_internlm2`, `hf_internvl`): the
 * projector output, the logits at every position of `in.input_ids` with the image features spliced in, and the
 * greedy tokens generated WITH the KV cache (the goldens re-ran the whole sequence each step; `<IMG_CONTEXT>` is
 * never chosen there, so it is suppressed here too).
 */
import { agreeingPrefix, EXACT_BOUND } from './compare.js';
import type { ComparedTensor } from './compare.js';
import type { FixtureRunner } from './registry.js';
import { architectureOf } from '../../models/registry.js';
import { InternVLChatModel } from '../../models/internvl_chat.js';
import { generate } from '../../tasks/generation.js';
import { UsageError } from '../../core/errors.js';

export const chatModelRunner: FixtureRunner = {
  name: 'internvl_chat',
  matches(fixture) {
    if (!fixture.config || fixture.goldenDir !== fixture.dir || !fixture.has('in.input_ids')) return false;
    return architectureOf(fixture.config).capabilities.includes('chat');
  },
  async run(fixture, options) {
    const model = await InternVLChatModel.load(fixture.dir, {
      session: { threads: options.threads },
      configureLlmGraph: options.graphs?.llm,
      configureVisionGraph: options.graphs?.vision,
    });
    const compared: ComparedTensor[] = [];
    try {
      const ids = Array.from(fixture.tensor('in.input_ids').data);
      const imageTokenId = fixture.has('in.img_context_token_id')
        ? fixture.tensor('in.img_context_token_id').data[0]
        : model.config.imageTokenId;
      if (imageTokenId === null)
        throw new UsageError(
          `${fixture.dir}: neither in.img_context_token_id nor config image_token_id gives the <IMG_CONTEXT> id`,
        );
      const pixels = fixture.tensor('in.pixel_values');
      const tiles = pixels.shape[0];
      const features = await model.extractFeature(Float32Array.from(pixels.data), tiles);
      if (fixture.has('out.vit_embeds'))
        compared.push(fixture.compare('out.vit_embeds', { data: features.data, shape: features.dims }));

      const lm = model.language;
      const S = ids.length;
      const embeds = await model.embedWithImages(ids, imageTokenId, features);
      const decoder = lm.batchDecoder({ maxSequences: 1, maxLength: S });
      const logits = await decoder.prefill(decoder.addSequence(), { embeds }, { allPositions: true });
      const V = lm.config.vocabSize;
      if (fixture.has('out.logits')) compared.push(fixture.compare('out.logits', { data: logits, shape: [1, S, V] }));

      if (fixture.has('out.generated_ids')) {
        const steps = fixture.entry('out.generated_ids').shape[1];
        const stepLogits = new Float32Array(steps * V);
        const result = await generate(
          lm,
          { ids, embeds },
          {
            maxNewTokens: steps,
            suppressTokenIds: [imageTokenId],
            onLogits: (_, step, row) => stepLogits.set(row, step * V),
          },
        );
        compared.push(
          fixture.compare('out.generated_ids', { data: result.ids, shape: [1, result.ids.length] }, EXACT_BOUND),
        );
        // After a differing token the contexts differ: the step logits are compared up to and including it.
        const golden = fixture.tensor('out.generated_ids').data;
        const rows = Math.min(result.ids.length, agreeingPrefix(result.ids, golden) + 1);
        if (fixture.has('out.greedy_step_logits'))
          compared.push(
            fixture.compareRows('out.greedy_step_logits', { data: stepLogits.subarray(0, rows * V), shape: [rows, V] }),
          );
      }
    } finally {
      await model.release();
    }
    return compared;
  },
};
