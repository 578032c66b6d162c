// Type declarations for @streamai/client (hand-written; keep in step with streamai.js).

export const VERSION: string;

export type SessionState = 'new' | 'connecting' | 'connected' | 'disconnected' | 'closing' | 'closed';

export interface ConnectOptions {
  /**
   * Server base URL; '' (default) = same origin. May carry a path prefix. An array names router
   * replicas: the offer goes to the first that takes it (the next on a network error, timeout, 5xx or 429).
   */
  url?: string | string[];
  /** Pipeline name from GET /v1/pipelines. */
  pipeline: string;
  /** Per-session pipeline parameters. */
  params?: Record<string, unknown>;
  /** What to send: a MediaStream you own, or getUserMedia kinds (default {audio: true, video: true}); false = receive only. */
  media?: MediaStream | { audio?: boolean | MediaTrackConstraints; video?: boolean | MediaTrackConstraints } | false;
  /** Which kinds to receive back (default both). */
  receive?: { audio?: boolean; video?: boolean };
  /** STUN/TURN servers. Default [] (no public STUN server is ever added). */
  iceServers?: RTCIceServer[];
  /** The API token, sent as `Authorization: Bearer <token>` when the session is created (the session's own
   * `session_token` from the answer is used for everything after: DELETE, the events WebSocket). */
  token?: string;
  /** Element to play the processed video (and audio, when no `audio` element is given). */
  video?: HTMLVideoElement | null;
  /** Element to play the processed audio. */
  audio?: HTMLAudioElement | null;
  /** Events transport: the WebRTC data channel (default) or the server's WebSocket. */
  events?: 'datachannel' | 'websocket';
  /** Handlers registered before negotiation starts. */
  on?: Partial<{ [K in keyof SessionEventMap]: (e: SessionEventMap[K]) => void }>;
  /** Video codecs in order of preference (default ['video/VP8', 'video/H264']); null leaves the browser's order. */
  codecs?: string[] | null;
  /** RTCRtpSendParameters.degradationPreference for the video sender (default 'maintain-resolution'). */
  degradationPreference?: RTCDegradationPreference | null;
  /** POST /v1/sessions (default 30000: a server may load models before answering). */
  requestTimeoutMs?: number;
  iceGatheringTimeoutMs?: number;
  /** From the answer to ICE connected + events channel open (default 15000). */
  connectTimeoutMs?: number;
  disconnectTimeoutMs?: number;
  pingIntervalMs?: number;
  serverTimeoutMs?: number;
  statsIntervalMs?: number;
  /** Close (and DELETE the server session) on `pagehide`. Default true. */
  closeOnPageHide?: boolean;
  metrics?: { windowMs?: number; maxSamples?: number; rateWindowMs?: number };
  /** Test seam: replacements for fetch, RTCPeerConnection, getUserMedia, timers. */
  deps?: Record<string, unknown>;
}

export declare class StreamaiError extends Error {
  constructor(message: string, opts?: { status?: number; code?: string; retryAfter?: number | null; cause?: unknown; details?: unknown });
  name: 'StreamaiError';
  /** HTTP status; 0 when no HTTP response was involved. */
  status: number;
  /** Server code (e.g. 'unknown_pipeline') or client code (see CLIENT_CODES). */
  code: string;
  /** Seconds from Retry-After, or null. */
  retryAfter: number | null;
  /** For session failures: true when the session ended because of it. */
  fatal?: boolean;
  details?: unknown;
  readonly retryable: boolean;
  toJSON(): { name: string; status: number; code: string; message: string; retryAfter: number | null };
}

export declare const CLIENT_CODES: Readonly<{
  NETWORK: 'network';
  TIMEOUT: 'timeout';
  ICE_FAILED: 'ice_failed';
  SERVER_GONE: 'server_gone';
  SERVER_ERROR: 'server_error';
  BAD_RESPONSE: 'bad_response';
  MESSAGE_TOO_LARGE: 'message_too_large';
  NOT_CONNECTED: 'not_connected';
  MEDIA: 'media';
  ABORTED: 'aborted';
}>;

interface ServerEventBase {
  type: string;
  /** Server wall time, seconds. */
  t: number | null;
  [key: string]: unknown;
}
export interface TranscriptEvent extends ServerEventBase { type: 'transcript'; text: string; final: boolean; stable?: unknown; utterance: string | number | null }
export interface TranslationEvent extends ServerEventBase { type: 'translation'; text: string; language: string | null; utterance: string | number | null; final: boolean }
export interface LatencyEvent extends ServerEventBase {
  type: 'latency';
  kind: 'video' | 'audio' | 'utterance' | string;
  ms?: number | null;
  speech_end_to_transcript_ms?: number | null;
  speech_end_to_translation_ms?: number | null;
  speech_end_to_first_audio_ms?: number | null;
}
export interface DropEvent extends ServerEventBase { type: 'drop'; stage: string | null; reason: string; count: number }
/** frames_in/frames_out: a total, or counts per media kind ({video, audio}). */
export interface StatsEvent extends ServerEventBase { type: 'stats'; frames_in: number | Record<string, number>; frames_out: number | Record<string, number>; drops: number }
export interface PromptEvent extends ServerEventBase { type: 'prompt'; text: string }
export interface ServerStateEvent extends ServerEventBase { type: 'state'; state: string; source: 'server' }
export interface ClientStateEvent { type: 'state'; source: 'client'; state: SessionState; previous: SessionState; error?: StreamaiError }
export interface PongEvent extends ServerEventBase { type: 'pong'; server_t: number | null }
export type ServerEvent = TranscriptEvent | TranslationEvent | LatencyEvent | DropEvent | StatsEvent | PromptEvent | ServerStateEvent | PongEvent | ServerEventBase;

export interface Percentiles { p50: number | null; p95: number | null; n: number }
export interface Metrics {
  /** Always true: glass-to-glass is estimated, not measured. */
  estimate: true;
  /** 'video' (glass-to-glass) when video latency samples arrive; else 'speech' (speech end to ear, per utterance); else 'audio' (mouth-to-ear). */
  kind: 'video' | 'speech' | 'audio';
  label: string;
  glassToGlass: Percentiles;
  server: Percentiles;
  audioServer: Percentiles;
  /** encodeMs/decodeMs only on the video path. */
  components: { serverMs: number | null; networkMs: number | null; jitterBufferMs: number | null; encodeMs?: number | null; decodeMs?: number | null };
  /** Components not known yet (counted as 0 in the estimate). */
  missing: string[];
  rttMs: number | null;
  dropsPerSec: number | null;
  receiveDropsPerSec: number | null;
  serverCounters: { frames_in: number | Record<string, number> | null; frames_out: number | Record<string, number> | null; drops: number | null };
  receive: { framesDecoded: number; framesDropped: number; fps: number | null; width: number | null; height: number | null; audioPacketsReceived: number | null } | null;
  utterance: { speechEndToTranscriptMs: number | null; speechEndToTranslationMs: number | null; speechEndToFirstAudioMs: number | null } | null;
}

export interface SessionEventMap {
  transcript: TranscriptEvent;
  translation: TranslationEvent;
  latency: LatencyEvent;
  drop: DropEvent;
  stats: StatsEvent;
  prompt: PromptEvent;
  pong: PongEvent;
  /** Client transitions (source 'client') and server state messages (source 'server'). */
  state: ClientStateEvent | ServerStateEvent;
  /** Server errors (non-fatal: fatal false) and session failures (fatal true, followed by state 'closed'). */
  error: StreamaiError;
  /** Every server message, parsed. */
  event: ServerEvent;
  metrics: Metrics;
  track: { track: MediaStreamTrack; stream: MediaStream };
  warning: { message: string; code?: string };
}

export type ClientMessage =
  | { type: 'prompt'; text: string }
  | { type: 'params'; params: Record<string, unknown> }
  | { type: 'interrupt' }
  | { type: 'ping'; t: number }
  | { type: string; [key: string]: unknown };

export declare class Session {
  constructor(options: ConnectOptions);
  readonly state: SessionState;
  sessionId: string | null;
  /** This session's capability (from the answer): reads, steers and ends it. */
  sessionToken: string | null;
  /** Lets others watch this session over WHEP, nothing else (the demo's viewer link). */
  viewerToken: string | null;
  /** The node holding the session (differs from `url` when a fleet router placed it). */
  nodeUrl: string | null;
  pipeline: string | null;
  remoteStream: MediaStream | null;
  localStream: MediaStream | null;
  pc: RTCPeerConnection | null;
  /** The failure that ended the session, if one did. */
  error: StreamaiError | null;
  /** Resolves when the session reaches 'closed'. */
  readonly closed: Promise<Session>;
  on<K extends keyof SessionEventMap>(name: K, fn: (e: SessionEventMap[K]) => void): () => void;
  once<K extends keyof SessionEventMap>(name: K, fn: (e: SessionEventMap[K]) => void): () => void;
  off<K extends keyof SessionEventMap>(name: K, fn: (e: SessionEventMap[K]) => void): void;
  /** Throws StreamaiError: 'not_connected', 'message_too_large' (16 KiB), 'bad_message'. */
  send(msg: ClientMessage): void;
  prompt(text: string): void;
  setParams(params: Record<string, unknown>): void;
  interrupt(): void;
  /** Data-channel round trip in ms (null when the session closed first). */
  ping(): Promise<number | null>;
  metrics(): Metrics;
  start(): Promise<Session>;
  close(): Promise<Session>;
}

/** Negotiates a session; resolves when connected, rejects with StreamaiError. */
export declare function connect(options: ConnectOptions): Promise<Session>;

export interface ReconnectOptions {
  retries?: number;
  baseMs?: number;
  maxMs?: number;
  factor?: number;
  jitter?: number;
}
export interface ReconnectingSession {
  /** Resolves with the first connected Session; rejects when the helper gives up. */
  readonly ready: Promise<Session>;
  readonly session: Session | null;
  readonly state: SessionState | 'reconnecting';
  readonly attempt: number;
  on<K extends keyof SessionEventMap>(name: K, fn: (e: SessionEventMap[K]) => void): () => void;
  on(name: 'reconnecting', fn: (e: { attempt: number; delayMs: number; error: StreamaiError }) => void): () => void;
  on(name: 'session', fn: (s: Session) => void): () => void;
  send(msg: ClientMessage): void;
  metrics(): Metrics | null;
  close(): Promise<void>;
}
/** Keeps a session up: retryable failures (network, timeout, ICE, 429, 5xx) open a new session after backoff. */
export declare function reconnect(options: ConnectOptions, retry?: ReconnectOptions): ReconnectingSession;

export interface PipelineInfo {
  name: string;
  description?: string;
  budget_ms?: number;
  stages?: string[];
  inputs?: Array<'audio' | 'video'>;
  controls?: string[];
}
export declare function fetchPipelines(opts?: { url?: string; token?: string; timeoutMs?: number }): Promise<{ pipelines: PipelineInfo[]; default?: string }>;
export declare function listSessions(opts?: { url?: string; token?: string; timeoutMs?: number }): Promise<{
  sessions: Array<{ id: string; pipeline: string; age_s: number; frames_in: number; frames_out: number; drops: number; state: string }>;
}>;

export declare function isRetryable(err: unknown): boolean;
export declare function backoffDelay(attempt: number, opts?: ReconnectOptions, err?: StreamaiError | null, random?: () => number): number;
export declare function parseServerMessage(data: string | ArrayBuffer | ArrayBufferView): { ok: true; event: ServerEvent } | { ok: false; reason: string };
export declare function encodeClientMessage(msg: ClientMessage): string;
export declare const MAX_MESSAGE_BYTES: number;
export declare class CaptionTrack {
  constructor(maxLines?: number);
  lines: Array<{ utterance: unknown; text: string; final: boolean }>;
  apply(event: TranscriptEvent | TranslationEvent): boolean;
  text(): string;
  clear(): void;
}
export declare function percentile(values: number[], p: number): number | null;
export declare function extractRtcStats(report: RTCStatsReport | object[], prev?: object | null): object;
export declare class LatencyEstimator {
  constructor(opts?: { windowMs?: number; maxSamples?: number; rateWindowMs?: number });
  snapshot(now: number): Metrics;
}
export declare const STATES: readonly SessionState[];
export declare class StateMachine {
  state: SessionState;
  transition(to: SessionState, info?: object): boolean;
}
export declare function sortCodecs<T extends { mimeType: string }>(codecs: T[], preferred?: string[]): T[];

export declare class WhepError extends Error {
  status: number;
  code: string;
}
/** Watch a session's processed output over WHEP; `stream.viewer.close()` ends the viewer. */
export declare function watch(options: {
  url?: string;
  session: string;
  video?: HTMLVideoElement;
  token?: string;
  iceServers?: RTCIceServer[];
  gatherTimeoutMs?: number;
}): Promise<MediaStream & { viewer: { close(): Promise<void> } }>;

// ---- rooms ----------------------------------------------------------------------------------

export interface RoomCaptionFields { speaker: string; name: string; language: string }
export interface RoomTranslationEvent extends TranslationEvent { speaker: string; name: string; source_language: string; source?: string }
export interface ParticipantEvent extends ServerEventBase { type: 'participant'; action: 'joined' | 'left'; participant: string; name: string; language: string; role: 'speaker' | 'listener'; reason?: string }
export interface RoomEvent extends ServerEventBase { type: 'room'; room: string; pipeline: string; languages: string[]; participants: Array<{ participant: string; name: string; language: string; role: string }> }
export interface SpeakingEvent extends ServerEventBase { type: 'speaking'; speaker: string; name: string; state: 'start' | 'end'; utterance: number }
export interface RoomLatencyEvent extends ServerEventBase {
  type: 'room_latency';
  speaker: string;
  name: string;
  direction: string;
  utterance: number;
  final_transcript_ms: number | null;
  translation_ms: number | null;
  first_audio_ms: number | null;
}

export interface RoomInfo {
  room_id: string;
  pipeline: string;
  languages: string[];
  max_speakers: number;
  max_listeners: number;
  max_age_s: number;
  participants_url: string;
  /** Read and end the room, join it. Shown once. */
  room_token: string;
  /** Join as a speaker or a listener. Shown once. */
  join_token: string;
  /** Listen only. Shown once. */
  listen_token: string;
}

export declare function createRoom(opts?: {
  url?: string;
  /** The node's API token, when it has one. */
  token?: string;
  pipeline?: string;
  languages?: string[];
  maxSpeakers?: number;
  timeoutMs?: number;
}): Promise<RoomInfo>;

export declare function fetchRoomPipelines(opts?: { url?: string; token?: string; timeoutMs?: number }): Promise<{
  pipelines: Array<{ name: string; description: string; languages: string[]; pairs: string[]; budget_ms: number; max_speakers: number; max_listeners: number }>;
}>;

export interface JoinRoomOptions extends Omit<ConnectOptions, 'pipeline' | 'params' | 'receive'> {
  room: string;
  /** The language you speak and hear. */
  language: string;
  /** The room's join token (joinRoom) or listen token (listen). */
  token: string;
  /** Shown to the others with your captions. */
  name?: string;
  /** Client params the room pipeline allows (e.g. {vad: {silence_ms: 500}}). */
  params?: Record<string, unknown>;
}

/** Join as a speaker: the microphone goes in, the others come back in your language (never your own voice). */
export declare function joinRoom(options: JoinRoomOptions): Promise<Session>;
/** Listen in one language (send nothing): the room's mix in that language and the captions. */
export declare function listen(options: Omit<JoinRoomOptions, 'params' | 'media'>): Promise<Session>;

/** A link to a room page with the capabilities in the fragment (never the query). */
export declare function roomLink(page: string, fields: { room: string; join?: string; listen?: string; language?: string }): string;
export declare function parseRoomLink(hash: string): { room: string | null; join: string | null; listen: string | null; language: string | null };

export interface RoomLatencyEntry { direction: string; speaker: string | null; transcriptMs: number | null; translationMs: number | null; firstAudioMs: number | null; n: number }
export declare class RoomLatency {
  observe(event: Partial<RoomLatencyEvent>): RoomLatencyEntry | null;
  snapshot(): RoomLatencyEntry[];
}
