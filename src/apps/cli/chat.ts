/** `internvl chat --model <dir> [--image a.jpg …] [--video v.mp4] ["question" …]`: multimodal chat. */
import readline from 'node:readline';
import { parseCommandArgs } from './args.js';
import { GENERATION_OPTIONS, generationArgs } from './generation_args.js';
import { MODEL_OPTIONS, resolveModelArg, sessionArgs, weightsArg, weightsOption } from './model_arg.js';
import type { Command } from './registry.js';

export const chatCommand: Command = {
  name: 'chat',
  summary: 'chat about images or a video with an InternVL-Chat model (streams; interactive without a question)',
  async run(args) {
    const parsed = parseCommandArgs(
      {
        command: 'chat',
        synopsis: 'chat --model <dir|id> [--image <file>]... [--video <file>] [options] ["question"]...',
        description: `Chat with an InternVL-Chat checkpoint (InternVL 1.5 / 2 / 2.5 / 3, original or *-hf layout), as the official
model.chat(): dynamic tiling of each image, the model's conversation template, history across turns.
Each question is one turn of the same conversation. Without a question it reads questions from the terminal
(or one per line from standard input) until end of input; the answer streams as it is generated.`,
        options: {
          ...MODEL_OPTIONS,
          image: {
            type: 'string',
            multiple: true,
            value: 'file',
            help: 'an image (repeatable: several images are labelled Image-1, Image-2, ...)',
          },
          video: {
            type: 'string',
            value: 'file',
            help: 'a video: frames sampled as the official load_video, one tile each (needs ffmpeg)',
          },
          frames: { type: 'string', value: 'n', help: 'video frames', default: 8 },
          'max-tiles': {
            type: 'string',
            value: 'n',
            help: "tiles per image (default: the config's max_dynamic_patch, usually 12)",
          },
          system: { type: 'string', value: 'text', help: "replace the template's system message" },
          'llm-weights': weightsOption(
            'fp32, int8, int4, or int4+int8 (4-bit decoding, int8 prefill): faster, slightly less exact; quantized once and cached',
          ),
          'vision-weights': weightsOption('fp32 or int8'),
          ...GENERATION_OPTIONS,
          json: {
            type: 'boolean',
            help: 'one line per turn: {"response", "ids", "prompt_tokens", "finish_reason": "stop"|"length"}',
          },
        },
        positionals: { min: 0, max: Infinity },
      },
      args,
    );
    if (!parsed) return 0;
    const imagePaths = (parsed.values.image as string[] | undefined) ?? [];
    const video = parsed.string('video');
    if (video && imagePaths.length > 0) parsed.fail('give --image or --video, not both');
    const maxTiles = parsed.integer('max-tiles', { min: 1, max: 64 });
    const frames = parsed.integer('frames', { min: 1, max: 64 });
    const generation = generationArgs(parsed);
    const json = parsed.flag('json');

    const [{ loadChatPipeline, Conversation }, { loadImage }, { loadVideoFrames }] = await Promise.all([
      import('../../tasks/chat.js'),
      import('../../processing/image.js'),
      import('../../processing/video.js'),
    ]);
    const images = await Promise.all(imagePaths.map((p) => loadImage(p)));
    const videoFrames = video
      ? (await loadVideoFrames(video, { sampling: 'chat', numFrames: frames })).frames
      : undefined;
    const pipeline = await loadChatPipeline(await resolveModelArg(parsed), {
      session: sessionArgs(parsed),
      configureLlmGraph: weightsArg(parsed, 'llm-weights'),
      configureVisionGraph: weightsArg(parsed, 'vision-weights', ['fp32', 'int8']),
    });
    try {
      const conversation = new Conversation(pipeline, { systemMessage: parsed.string('system') });
      if (images.length > 0 || videoFrames) conversation.setVisuals({ images, videoFrames, maxTiles });
      const controller = new AbortController();
      const onInterrupt = () => controller.abort();
      process.on('SIGINT', onInterrupt);
      const turn = async (question: string) => {
        const stream = conversation.stream(question, { ...generation, signal: controller.signal });
        for (;;) {
          const next = await stream.next();
          if (next.done) {
            if (json)
              process.stdout.write(
                `${JSON.stringify({
                  response: next.value.response,
                  ids: next.value.ids,
                  prompt_tokens: next.value.promptTokens,
                  finish_reason: next.value.finishReason,
                })}\n`,
              );
            else process.stdout.write('\n');
            return;
          }
          if (!json) process.stdout.write(next.value);
        }
      };
      try {
        if (parsed.positionals.length > 0) {
          for (const question of parsed.positionals) await turn(question);
        } else {
          const interactive = process.stdin.isTTY === true;
          const lines = readline.createInterface({
            input: process.stdin,
            output: interactive ? process.stderr : undefined,
            terminal: interactive,
          });
          if (interactive) process.stderr.write('(one question per line; Ctrl-D to end)\n> ');
          for await (const line of lines) {
            if (line.trim()) await turn(line.trim());
            if (interactive) process.stderr.write('> ');
          }
        }
      } finally {
        process.off('SIGINT', onInterrupt);
      }
      return 0;
    } finally {
      await pipeline.model.release();
    }
  },
};
