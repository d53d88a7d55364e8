/**
 * Runner for the InternVL-C/G model fixture (`internvl_clip`): vision states, QLLaMA query features, text hidden
 * states and embeddings, image embeddings and logits in both modes.
 */
import type { FloatTensor } from '../../core/tensor.js';
import type { ComparedTensor } from './compare.js';
import type { FixtureRunner } from './registry.js';
import { architectureOf } from '../../models/registry.js';
import { InternVLClipModel } from '../../models/internvl_clip.js';

export const clipModelRunner: FixtureRunner = {
  name: 'internvl_clip',
  matches(fixture) {
    return (
      fixture.config !== null &&
      fixture.goldenDir === fixture.dir &&
      fixture.has('in.pixel_values') &&
      architectureOf(fixture.config).capabilities.includes('clip')
    );
  },
  async run(fixture, options) {
    const model = await InternVLClipModel.load(fixture.dir, {
      session: { threads: options.threads },
      configureVisionGraph: options.graphs?.vision,
      configureQllamaGraph: options.graphs?.qllama,
    });
    const compared: ComparedTensor[] = [];
    const check = (name: string, { data, dims }: FloatTensor) => {
      if (fixture.has(name)) compared.push(fixture.compare(name, { data, shape: dims }));
    };
    try {
      const pixels = fixture.tensor('in.pixel_values');
      const B = pixels.shape[0];
      const pixelData = Float32Array.from(pixels.data);
      const { tokens } = await model.encodeVision(pixelData, B);
      check('out.vision_last_hidden_state', tokens);
      check('out.qllama_query_features', await model.queryFeatures(tokens));

      const idTensor = fixture.tensor('in.input_ids');
      const [T, L] = idTensor.shape;
      const ids = Array.from({ length: T }, (_, t) => Array.from(idTensor.data.subarray(t * L, (t + 1) * L)));
      const text = await model.encodeText(ids);
      check('out.text_hidden', text.hidden);
      check('out.text_embeds', text.embeds);
      for (const mode of ['C', 'G'] as const) {
        const images = await model.encodeImage(pixelData, B, mode);
        check(`out.image_embeds_${mode}`, images);
        check(`out.logits_per_image_${mode}`, model.similarity(images, text.embeds));
      }
    } finally {
      await model.release();
    }
    return compared;
  },
};
