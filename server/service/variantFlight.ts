/**
 * The thumbnails' flight: one resize per thumbnail in a process. The original's bytes
 * come from the stored file or, on a cold miss, from the original's flight
 * (server/service/originalFlight.ts) before they are written; a place in the resize
 * queue, the resize, the thumbnail staged, its record written into the original's
 * sidecar, and the thumbnail renamed into place only once the original is.
 *
 * A format class's thumbnail (issue 20, docs/formats.md) comes after the source-format
 * one, which its clients' neighbours need anyway and which it is measured against: its
 * own place in the resize queue, the engine's conversion, and its file committed, or the
 * source-format file hard-linked under its name when converting did not pay.
 */
import type { GatePlace } from '../fetch/admission.js';
import type { Conversion, ResizeEngine, ResizeResult } from '../images/engine.js';
import { ImageproxyError, isImageproxyError, toImageproxyError } from '../errors.js';
import type { ModernFormat } from '../contract/accept.js';
import { classVariantStem, fileStem, variantRecordName } from '../contract/layout.js';
import { isWorthServing } from '../images/formatEncode.js';
import { variantRecordOf } from '../tree/originals.js';
import { FORMAT_INFO, formatFromExt, type ImageFormat } from '../images/sniff.js';
import { InProcessFlights } from '../fetch/singleFlight.js';
import type { Blocklist } from '../takedown/blocklist.js';
import type { StoredImage } from '../tree/store.js';
import type { ImageRequest } from './imageService.js';
import { createMissGate, type MissContext } from './missSteps.js';
import type { CompanionThumbnail, OriginalSource } from './originalFlight.js';

/** A thumbnail made by this process: the stored file and the bytes written to it. */
interface MadeVariant {
  image: StoredImage;
  content: Buffer;
}

/**
 * A format class's thumbnail: committed, or (`provisional`) the source-format thumbnail
 * answered for now because the class's encode failed; nothing was committed for the
 * class, so the next request tries again.
 */
interface MadeClassVariant extends MadeVariant {
  provisional: boolean;
}

export interface VariantFlights {
  /**
   * A thumbnail of `label`, made once per process. `original`: the stored original the
   * caller found (null: none, so it is fetched); `checked`: the blocklist the request was
   * cleared against.
   */
  make(request: ImageRequest, label: string, original: StoredImage | null, checked: Blocklist): Promise<MadeVariant>;
  /**
   * The thumbnail of `label` for the clients of `format`, made once per process; the
   * source-format thumbnail first if `sourceThumbnail` (what the caller found) is null.
   */
  makeClass(
    request: ImageRequest,
    label: string,
    format: ModernFormat,
    original: StoredImage | null,
    sourceThumbnail: StoredImage | null,
    checked: Blocklist,
  ): Promise<MadeClassVariant>;
  /** Resizes running or waiting. */
  queueDepth(): number;
}

/** The bytes and format a thumbnail is made from, and the original it must not be renamed before. */
interface ResizeSource {
  input: Buffer;
  format: ImageFormat;
  original: Promise<StoredImage>;
  /** Set when the thumbnail is to be committed with the original it started fetching (OriginalFlight.companion). */
  companion: CompanionThumbnail | null;
}

/** A ResizeSource whose bytes may be dropped while waiting (startWithBytes). */
type HeldSource = Omit<ResizeSource, 'input'> & { input: Buffer | null };

/** The bytes a waiting thumbnail still holds (startWithBytes drops them only on its over-budget path). */
function heldInput(source: HeldSource): Buffer {
  if (source.input === null) throw new Error('resize input already dropped');
  return source.input;
}

function formatOf(stored: StoredImage): ImageFormat {
  const format = formatFromExt(stored.ext);
  if (format === null) throw new Error(`no image format for ${stored.relativePath}`);
  return format;
}

export function createVariantFlights(context: MissContext, engine: ResizeEngine, originals: OriginalSource): VariantFlights {
  const { config, store, logger, metrics, now, takedown } = context;
  const flights = new InProcessFlights();
  const resizeGate = createMissGate(context, 'resize');
  // What thumbnails waiting for a resize slot hold of their originals' bytes, all together
  // (at most limits.maxWaitingResizeBytes).
  let waitingInputBytes = 0;

  /** A stored original's bytes (no original we store is over limits.maxBytes). */
  const readOriginal = (stored: StoredImage): Promise<Buffer> => store.readImage(stored, config.limits.maxBytes);

  async function resizeSource(request: ImageRequest, known: StoredImage | null, companion = false): Promise<ResizeSource> {
    if (known !== null) {
      const format = formatFromExt(known.ext);
      const input = await readOriginal(known).catch((error: unknown) => {
        // Purged, moved aside or replaced since the lookup: the original's flight looks again.
        if (error instanceof ImageproxyError && error.code === 'not_stored') return null;
        throw error;
      });
      if (format !== null && input !== null) return { input, format, original: Promise.resolve(known), companion: null };
    }
    const flight = originals.ensure(request, known === null, companion);
    const image = await flight.image;
    if (image !== null) return { input: image.bytes, format: image.format, original: flight.stored, companion: flight.companion };
    // Found stored or failed: nothing to commit with it.
    void flight.companion?.commitWith(null);
    const stored = await flight.stored;
    const format = formatFromExt(stored.ext);
    if (format === null) throw new Error(`cannot resize ${stored.relativePath}`);
    return { input: await readOriginal(stored), format, original: flight.stored, companion: null };
  }

  /**
   * Waits for a resize slot. A short wait (a few thumbnails queued) keeps the bytes,
   * within a budget, rather than reading them back from the disk a moment later. A slot
   * may be seconds away (a burst, the jimp engine): past the budget a waiting thumbnail
   * holds none of the original's bytes; they are read back from the stored original when
   * its turn comes. A full queue is then a count of requests, not of megabytes.
   */
  async function startWithBytes(place: GatePlace, source: HeldSource): Promise<Buffer> {
    // No local holds the bytes across an await: a suspended async function keeps its
    // locals alive, so a dropped `source.input` would still be held by every waiter.
    const bytes = heldInput(source).length;
    if (!place.wouldWait()) {
      await place.start();
      return heldInput(source);
    }
    if (waitingInputBytes + bytes <= config.limits.maxWaitingResizeBytes) {
      waitingInputBytes += bytes;
      try {
        await place.start();
      } finally {
        waitingInputBytes -= bytes;
      }
      return heldInput(source);
    }
    // The only reference to the bytes is dropped while waiting. The original is then
    // committed alone: its commit cannot wait for a thumbnail that reads it back.
    source.input = null;
    void source.companion?.commitWith(null);
    source.companion = null;
    await place.start();
    return readOriginal(await source.original);
  }

  async function resize(input: Buffer, format: ImageFormat, request: ImageRequest, label: string): Promise<ResizeResult> {
    const { size } = request.link;
    if (size.kind !== 'box') throw new Error(`cannot resize to ${label}`);
    return timedResize('source', () => engine.resize({ input, format, maxHeight: size.maxHeight, maxWidth: size.maxWidth }));
  }

  /** An engine call counted and timed under its format (`source`, or the class made). */
  async function timedResize<T>(format: ModernFormat | 'source', work: () => Promise<T>): Promise<T> {
    const labels = { engine: engine.name, format };
    const stopTimer = metrics.resizeSeconds.startTimer(labels);
    let result: T;
    try {
      result = await work();
    } catch (error) {
      metrics.resizes.inc({ ...labels, result: toImageproxyError(error).code });
      throw error;
    } finally {
      stopTimer();
    }
    metrics.resizes.inc({ ...labels, result: 'ok' });
    return result;
  }

  /**
   * A thumbnail, made once per process (in-process flight). It takes no lock of its
   * own across processes: two processes making the same thumbnail at once each rename a
   * complete file of the same content into place, which is harmless; the original's
   * fetch, which is not, stays under the cross-process lock.
   */
  function make(request: ImageRequest, label: string, knownOriginal: StoredImage | null, checked: Blocklist): Promise<MadeVariant> {
    const { bucket } = request.link;
    const stem = fileStem(request.key, label);
    return flights.run(`${bucket}/${stem}`, async () => {
      // A place in the resize queue before the original is fetched: a thumbnail refused
      // `busy` has fetched nothing. Its running slot is taken only once the bytes are there.
      const place = resizeGate.enter();
      try {
        // `source.input` is the only reference to the original's bytes (startWithBytes may drop it).
        const source: HeldSource = await resizeSource(request, knownOriginal, true);
        let image: StoredImage | null = null;
        try {
          const started = now();
          const resized = await context.withBackoff(request, stem, async () => {
            const input = await startWithBytes(place, source);
            source.input = null;
            const made = await resize(input, source.format, request, label);
            // A takedown during the resize: the thumbnail is not shown.
            await takedown.refuseIfReloaded(checked, { key: request.key });
            return made;
          });
          // The engine's slot is not held while the files are written: the original's
          // commit may wait for a thumbnail that needs one (its companion).
          place.release();
          const ext = FORMAT_INFO[resized.format].ext;
          const record = variantRecordOf(resized.bytes, FORMAT_INFO[resized.format].contentType);
          // A served name is always complete and never ahead of its original: the
          // thumbnail becomes visible only once the original is in place, and its record
          // (in the original's sidecar) is written before it, as an original's sidecar is.
          if (source.companion !== null) {
            const staged = store.stageImage(bucket, request.key, label, ext, resized.bytes);
            staged.catch(() => undefined);
            image = await source.companion.commitWith({ recordName: variantRecordName(label, 'source'), record, staged });
            source.companion = null;
          }
          image ??= await store.commitVariant(bucket, request.key, label, ext, resized.bytes, record, source.original);
          logger.info(
            { path: image.relativePath, width: resized.width, height: resized.height, frames: resized.frames, engine: engine.name, ms: now() - started },
            'resized',
          );
          return { image, content: resized.bytes };
        } finally {
          // Failed before offering anything: the original is committed alone.
          void source.companion?.commitWith(null);
        }
      } finally {
        place.release();
      }
    });
  }

  /** The source-format thumbnail and its bytes: the one found (read back), or made now. */
  async function sourceThumbnailOf(
    request: ImageRequest,
    label: string,
    knownOriginal: StoredImage | null,
    found: StoredImage | null,
    checked: Blocklist,
  ): Promise<MadeVariant> {
    if (found !== null) {
      const content = await store.readImage(found, config.limits.maxBytes).catch((error: unknown) => {
        // Purged or moved aside since the lookup: made again below.
        if (error instanceof ImageproxyError && error.code === 'not_stored') return null;
        throw error;
      });
      if (content !== null) return { image: found, content };
    }
    return make(request, label, knownOriginal, checked);
  }

  /**
   * The original's bytes for a class's file: from the original's flight or file as the
   * source-format thumbnail gets them, so both are made side by side on a cold miss.
   * `foundSource`: the caller found the source-format thumbnail, and looked up no original.
   */
  async function classSource(request: ImageRequest, knownOriginal: StoredImage | null, foundSource: StoredImage | null): Promise<ResizeSource> {
    if (foundSource === null || knownOriginal !== null) return resizeSource(request, knownOriginal);
    return resizeSource(request, await store.find(request.link.bucket, request.key, null));
  }

  /**
   * What the engine converts from (ResizeEngine.convertsFrom), with the class's running
   * slot taken: the original's bytes, fetched or read as for the source-format thumbnail
   * and taken beside it; or that thumbnail once made (then no slot is held while it is).
   */
  async function conversionInput(
    request: ImageRequest,
    knownOriginal: StoredImage | null,
    foundSource: StoredImage | null,
    place: GatePlace,
    sourceMade: Promise<MadeVariant>,
  ): Promise<{ input: Buffer; format: ImageFormat }> {
    if (engine.convertsFrom === 'thumbnail') {
      const source = await sourceMade;
      await place.start();
      return { input: source.content, format: formatOf(source.image) };
    }
    // `original.input` is the only reference to the original's bytes (startWithBytes may drop it).
    const original: HeldSource = await classSource(request, knownOriginal, foundSource);
    const input = await startWithBytes(place, original);
    original.input = null;
    return { input, format: original.format };
  }

  /**
   * The class's conversion. Its own function so that the original's bytes it converts
   * from are no longer held once it returns: the class then waits for the source-format
   * thumbnail holding only the converted file.
   */
  async function convertForClass(
    request: ImageRequest,
    format: ModernFormat,
    knownOriginal: StoredImage | null,
    foundSource: StoredImage | null,
    place: GatePlace,
    sourceMade: Promise<MadeVariant>,
  ): Promise<Conversion> {
    const { size } = request.link;
    if (size.kind !== 'box') throw new Error(`cannot convert to ${format} without a box`);
    const input = await conversionInput(request, knownOriginal, foundSource, place, sourceMade);
    return timedResize(format, () => engine.convert({ ...input, maxHeight: size.maxHeight, maxWidth: size.maxWidth, to: format }));
  }

  function makeClass(
    request: ImageRequest,
    label: string,
    format: ModernFormat,
    knownOriginal: StoredImage | null,
    foundSource: StoredImage | null,
    checked: Blocklist,
  ): Promise<MadeClassVariant> {
    const { bucket, size } = request.link;
    const stem = classVariantStem(request.key, label, format);
    return flights.run(`${bucket}/${stem}`, async () => {
      if (size.kind !== 'box') throw new Error(`cannot resize to ${label}`);
      // The class's place before anything is fetched or made: refused `busy`, it did nothing.
      const place = resizeGate.enter();
      try {
        // Made beside the class's own work when both are missing; awaited below.
        const sourceMade = sourceThumbnailOf(request, label, knownOriginal, foundSource, checked);
        sourceMade.catch(() => undefined);
        const started = now();
        let conversion: Conversion;
        try {
          conversion = await convertForClass(request, format, knownOriginal, foundSource, place, sourceMade);
        } catch (error) {
          // The source-format thumbnail's own failure (the fetch's, the resize's) first.
          const source = await sourceMade;
          if (isImageproxyError(error) && (error.code === 'busy' || error.code === 'not_stored')) throw error;
          // The source-format thumbnail is sound: its clients' answer stands; this class
          // gets it for now, uncommitted, and the next request tries the encode again.
          logger.warn({ path: source.image.relativePath, format, err: toImageproxyError(error).detail ?? String(error) }, 'format thumbnail not made; source format answered for now');
          return { ...source, provisional: true };
        }
        const source = await sourceMade;
        await takedown.refuseIfReloaded(checked, { key: request.key });
        const converted = conversion.kind === 'converted' && isWorthServing(conversion.image.bytes.length, source.content.length) ? conversion.image : null;
        const image =
          converted === null
            ? await store.commitClassLink(bucket, request.key, label, format, source.image, source.content, variantRecordOf(source.content, FORMAT_INFO[formatOf(source.image)].contentType))
            : await store.commitClassVariant(bucket, request.key, label, format, format, converted.bytes, variantRecordOf(converted.bytes, FORMAT_INFO[format].contentType));
        logger.info(
          {
            path: image.relativePath,
            bytes: image.bytes,
            sourceBytes: source.content.length,
            kept: converted === null ? (conversion.kind === 'kept' ? conversion.reason : 'not smaller') : undefined,
            engine: engine.name,
            ms: now() - started,
          },
          converted === null ? 'format thumbnail linked to the source format' : 'format thumbnail made',
        );
        return { image, content: converted === null ? source.content : converted.bytes, provisional: false };
      } finally {
        place.release();
      }
    });
  }

  return {
    make,
    makeClass,
    queueDepth: () => resizeGate.figures.running + resizeGate.figures.waiting,
  };
}
