/** The language model of any supported folder: a bare causal LM, or the LLM inside an InternVL-Chat checkpoint. */
import { Checkpoint } from '../core/safetensors.js';
import type { SessionOptions } from '../core/session.js';
import { detectArchitecture, readConfig } from '../models/config.js';
import { CausalLM, parseLlmConfig } from '../models/llm.js';
import { InternVLChatModel } from '../models/internvl_chat.js';
import { ModelLoadError } from '../core/errors.js';

export async function loadLanguageModel(dir: string, options: { session?: SessionOptions } = {}): Promise<CausalLM> {
  const config = await readConfig(dir);
  const architecture = detectArchitecture(config);
  if (architecture === 'CausalLM')
    return CausalLM.load(await Checkpoint.open(dir), parseLlmConfig(config), { session: options.session });
  if (architecture === 'InternVLChatModel' || architecture === 'InternVLForConditionalGeneration') {
    return (await InternVLChatModel.load(dir, { session: options.session })).language;
  }
  throw new ModelLoadError(`${dir}: ${architecture} has no language model to generate with`);
}
