package tidemark.peer;

import io.confluent.parallelconsumer.ParallelConsumerOptions;
import io.confluent.parallelconsumer.ParallelConsumerOptions.CommitMode;
import io.confluent.parallelconsumer.ParallelConsumerOptions.ProcessingOrder;
import io.confluent.parallelconsumer.ParallelStreamProcessor;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.LockSupport;

/**
 * The Confluent Parallel Consumer peer of {@code tidemark bench}: consumes {@code --records}
 * records of {@code --topic} in a fresh group with {@code CommitMode.PERIODIC_CONSUMER_ASYNCHRONOUS},
 * the given {@code --ordering} (UNORDERED, KEY or PARTITION) and {@code --max-concurrency}, doing per
 * record the same work as tidemark's {@code sha256:ROUNDS} processor (SHA-256 of the payload, then of
 * the digest, ROUNDS times in all), with ROUNDS calibrated here to {@code --target-us} µs on one core
 * (0: no work), or with {@code --sleep-us MICROS} a wait of MICROS µs per record instead (simulated
 * IO, {@code LockSupport.parkNanos}: the thread is blocked, as a blocking client would block it).
 * Prints {@code records=N busy_s=S peak_rss_kib=K rounds=R us_per_record=U}: busy runs from the
 * first record started to the last one done.
 */
public final class Bench {
    public static void main(String[] argv) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < argv.length; i += 2) {
            a.put(argv[i].replaceFirst("^--", ""), argv[i + 1]);
        }
        String brokers = a.get("brokers");
        String topic = a.get("topic");
        long records = Long.parseLong(a.get("records"));
        int concurrency = Integer.parseInt(a.getOrDefault("max-concurrency", "16"));
        ProcessingOrder order = ProcessingOrder.valueOf(a.getOrDefault("ordering", "UNORDERED"));
        double targetUs = Double.parseDouble(a.getOrDefault("target-us", "0"));
        int payloadBytes = Integer.parseInt(a.getOrDefault("payload-bytes", "100"));
        long sleepNanos = Long.parseLong(a.getOrDefault("sleep-us", "0")) * 1_000L;

        byte[] sample = new byte[payloadBytes + 40];
        int rounds = targetUs > 0 ? calibrate(sample, targetUs) : 0;
        double usPerRecord = rounds > 0 ? measure(sample, rounds) : 0;

        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
        p.put(ConsumerConfig.GROUP_ID_CONFIG, "pc-bench-" + UUID.randomUUID());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p);
        ParallelConsumerOptions<byte[], byte[]> options = ParallelConsumerOptions.<byte[], byte[]>builder()
                .consumer(consumer)
                .ordering(order)
                .maxConcurrency(concurrency)
                .commitMode(CommitMode.PERIODIC_CONSUMER_ASYNCHRONOUS)
                .build();
        ParallelStreamProcessor<byte[], byte[]> pc = ParallelStreamProcessor.createEosStreamProcessor(options);
        pc.subscribe(List.of(topic));

        AtomicLong done = new AtomicLong();
        AtomicLong first = new AtomicLong();
        AtomicLong last = new AtomicLong();
        CountDownLatch all = new CountDownLatch(1);
        final int r = rounds;
        pc.poll(ctx -> ctx.streamConsumerRecords().forEach(record -> {
            first.compareAndSet(0, System.nanoTime());
            byte[] value = record.value();
            if (r > 0 && value != null) {
                sink(chain(value, r));
            }
            // parkNanos may return early: park again until the wait is over.
            long until = System.nanoTime() + sleepNanos;
            for (long left = sleepNanos; left > 0; left = until - System.nanoTime()) {
                LockSupport.parkNanos(left);
            }
            last.set(System.nanoTime());
            if (done.incrementAndGet() == records) {
                all.countDown();
            }
        }));
        boolean finished = all.await(30, TimeUnit.MINUTES);
        double busy = (last.get() - first.get()) / 1e9;
        System.out.printf("records=%d busy_s=%.3f peak_rss_kib=%d rounds=%d us_per_record=%.2f finished=%b%n",
                done.get(), busy, peakRssKib(), rounds, usPerRecord, finished);
        System.out.flush();
        pc.closeDontDrainFirst();
        System.exit(finished ? 0 : 1);
    }

    private static volatile byte sinkByte;

    private static void sink(byte[] digest) {
        sinkByte ^= digest[0];
    }

    /** SHA-256 applied {@code rounds} times: h1 = sha256(data), h(n+1) = sha256(hn). */
    static byte[] chain(byte[] data, int rounds) {
        try {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            byte[] d = md.digest(data);
            for (int i = 1; i < rounds; i++) {
                d = md.digest(d);
            }
            return d;
        } catch (Exception e) {
            throw new IllegalStateException(e);
        }
    }

    /** Rounds costing about {@code targetUs} µs on one core, after a JIT warm-up. */
    static int calibrate(byte[] sample, double targetUs) {
        for (int i = 0; i < 50; i++) {
            chain(sample, 2_000);
        }
        long start = System.nanoTime();
        chain(sample, 20_000);
        double perRound = (System.nanoTime() - start) / 1e3 / 20_000;
        return Math.max(1, (int) Math.round(targetUs / perRound));
    }

    static double measure(byte[] sample, int rounds) {
        int n = 2_000;
        long start = System.nanoTime();
        for (int i = 0; i < n; i++) {
            sink(chain(sample, rounds));
        }
        return (System.nanoTime() - start) / 1e3 / n;
    }

    static long peakRssKib() {
        try {
            for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
                if (line.startsWith("VmHWM:")) {
                    return Long.parseLong(line.replaceAll("[^0-9]", ""));
                }
            }
        } catch (Exception ignored) {
        }
        return 0;
    }
}
