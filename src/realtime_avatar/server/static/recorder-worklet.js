// Audio worklet for the voice sample: hands each block of microphone samples (mono, float)
// to the page, which keeps them, draws the level meter and writes the WAV.
class VoiceRecorder extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel && channel.length) this.port.postMessage(channel.slice(0));
    return true;
  }
}
registerProcessor("voice-recorder", VoiceRecorder);
