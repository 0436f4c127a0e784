/** Samples of one Prometheus text scrape: `name{labels}` -> value. */
export class Scrape {
  private constructor(readonly samples: Map<string, number>) {}

  static async of(port: number): Promise<Scrape> {
    const response = await fetch(`http://127.0.0.1:${port}/metrics`);
    if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
    const samples = new Map<string, number>();
    for (const line of (await response.text()).split('\n')) {
      if (line === '' || line.startsWith('#')) continue;
      const at = line.lastIndexOf(' ');
      samples.set(line.slice(0, at), Number(line.slice(at + 1)));
    }
    return new Scrape(samples);
  }

  /** A dataset's sample, or undefined when the scrape does not have it. */
  dataset(name: string, key: string): number | undefined {
    return this.samples.get(`dataset_cache_${name}{dataset="${key}"}`);
  }

  get(sample: string): number | undefined {
    return this.samples.get(sample);
  }
}
