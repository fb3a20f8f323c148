package test.pyspire;

import io.spiffe.bundle.x509bundle.X509Bundle;
import io.spiffe.provider.SpiffeSslContextFactory;
import io.spiffe.provider.SpiffeSslContextFactory.SslContextOptions;
import io.spiffe.spiffeid.SpiffeId;
import io.spiffe.svid.jwtsvid.JwtSvid;
import io.spiffe.svid.x509svid.X509Svid;
import io.spiffe.svid.x509svid.X509SvidValidator;
import io.spiffe.workloadapi.DefaultJwtSource;
import io.spiffe.workloadapi.DefaultWorkloadApiClient;
import io.spiffe.workloadapi.DefaultX509Source;
import io.spiffe.workloadapi.JwtSource;
import io.spiffe.workloadapi.WorkloadApiClient;
import io.spiffe.workloadapi.X509Source;

import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.SSLSocket;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintWriter;
import java.net.InetAddress;
import java.nio.charset.StandardCharsets;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;

/**
 * java-peer: an independent SPIFFE Workload API client on java-spiffe, driven by pyspire's
 * interop tests. It talks to the agent named by SPIFFE_ENDPOINT_SOCKET and prints one JSON
 * object per line, the same commands and keys as go-peer (tests/peers/go/main.go):
 * x509, jwt, validate, serve, dial. A failure prints {"error": "..."} and exits 1.
 */
public final class Peer {
    private Peer() {
    }

    public static void main(String[] args) {
        try {
            if (args.length < 1) {
                throw new IllegalArgumentException("usage: java-peer x509|jwt|validate|serve|dial [-flag value]...");
            }
            Map<String, String> flags = flags(args);
            switch (args[0]) {
                case "x509" -> x509(flags);
                case "jwt" -> jwt(flags);
                case "validate" -> validate(flags);
                case "serve" -> serve(flags);
                case "dial" -> dial(flags);
                default -> throw new IllegalArgumentException("unknown command " + args[0]);
            }
            System.exit(0);
        } catch (Exception err) {
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("error", err.getClass().getSimpleName() + ": " + err.getMessage());
            emit(out);
            System.exit(1);
        }
    }

    private static Map<String, String> flags(String[] args) {
        Map<String, String> flags = new HashMap<>();
        for (int i = 1; i < args.length; i += 2) {
            if (!args[i].startsWith("-") || i + 1 >= args.length) {
                throw new IllegalArgumentException("expected -flag value, got " + args[i]);
            }
            flags.put(args[i].substring(1), args[i + 1]);
        }
        return flags;
    }

    private static void x509(Map<String, String> flags) throws Exception {
        int updates = Integer.parseInt(flags.getOrDefault("updates", "1"));
        long deadline = System.nanoTime() + Long.parseLong(flags.getOrDefault("timeout", "30")) * 1_000_000_000L;
        try (DefaultX509Source source = DefaultX509Source.newSource()) {
            String last = "";
            int seen = 0;
            // java-spiffe's X509Source updates itself in the background and offers no change
            // notification: look at it often, report each new SVID or bundle.
            while (seen < updates) {
                Map<String, Object> current = describe(source);
                String key = current.get("serial") + "/" + current.get("bundle_authorities");
                if (!key.equals(last)) {
                    emit(current);
                    last = key;
                    seen++;
                    continue;
                }
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException(seen + " of " + updates + " X.509 updates seen");
                }
                Thread.sleep(100);
            }
        }
    }

    private static Map<String, Object> describe(X509Source source) throws Exception {
        X509Svid svid = source.getX509Svid();
        boolean verified;
        try {
            X509SvidValidator.verifyChain(svid.getChain(), source);
            verified = true;
        } catch (Exception err) {
            verified = false;
        }
        X509Bundle bundle = source.getBundleForTrustDomain(svid.getSpiffeId().getTrustDomain());
        Map<String, Object> out = new LinkedHashMap<>();
        out.put("spiffe_id", svid.getSpiffeId().toString());
        out.put("hint", svid.getHint() == null ? "" : svid.getHint());
        out.put("serial", svid.getLeaf().getSerialNumber().toString());
        out.put("not_after", svid.getLeaf().getNotAfter().getTime() / 1000);
        out.put("chain_length", svid.getChain().size());
        out.put("verified", verified);
        out.put("bundle_authorities", bundle.getX509Authorities().size());
        return out;
    }

    private static void jwt(Map<String, String> flags) throws Exception {
        String audience = required(flags, "audience");
        try (JwtSource source = DefaultJwtSource.newSource()) {
            JwtSvid svid = flags.containsKey("spiffe-id")
                    ? source.fetchJwtSvid(SpiffeId.parse(flags.get("spiffe-id")), audience)
                    : source.fetchJwtSvid(audience);
            JwtSvid validated = JwtSvid.parseAndValidate(svid.getToken(), source, Set.of(audience));
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("spiffe_id", svid.getSpiffeId().toString());
            out.put("token", svid.getToken());
            out.put("audience", new ArrayList<>(new TreeSet<>(validated.getAudience())));
            out.put("expiry", validated.getExpiry().getTime() / 1000);
            out.put("validated_locally", validated.getSpiffeId().toString());
            emit(out);
        }
    }

    private static void validate(Map<String, String> flags) throws Exception {
        String audience = required(flags, "audience");
        try (WorkloadApiClient client = DefaultWorkloadApiClient.newClient()) {
            JwtSvid svid = client.validateJwtSvid(required(flags, "token"), audience);
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("spiffe_id", svid.getSpiffeId().toString());
            out.put("audience", new ArrayList<>(new TreeSet<>(svid.getAudience())));
            out.put("claims", new ArrayList<>(new TreeSet<>(svid.getClaims().keySet())));
            emit(out);
        }
    }

    private static SSLContext context(X509Source source, Map<String, String> flags) throws Exception {
        SpiffeId allowed = SpiffeId.parse(required(flags, "authorize"));
        return SpiffeSslContextFactory.getSslContext(
                SslContextOptions.builder().x509Source(source).acceptedSpiffeIdsSupplier(() -> Set.of(allowed)).build());
    }

    private static String peerId(Certificate[] chain) throws Exception {
        Collection<List<?>> names = ((X509Certificate) chain[0]).getSubjectAlternativeNames();
        if (names != null) {
            for (List<?> name : names) {
                if (Integer.valueOf(6).equals(name.get(0))) {
                    return (String) name.get(1);
                }
            }
        }
        throw new IllegalStateException("peer certificate has no URI SAN");
    }

    private static void serve(Map<String, String> flags) throws Exception {
        int connections = Integer.parseInt(flags.getOrDefault("connections", "1"));
        try (DefaultX509Source source = DefaultX509Source.newSource()) {
            SSLContext tls = context(source, flags);
            try (SSLServerSocket listener = (SSLServerSocket) tls.getServerSocketFactory()
                    .createServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
                listener.setNeedClientAuth(true);
                Map<String, Object> ready = new LinkedHashMap<>();
                ready.put("listening", "127.0.0.1:" + listener.getLocalPort());
                ready.put("spiffe_id", source.getX509Svid().getSpiffeId().toString());
                emit(ready);
                for (int answered = 0; answered < connections; answered++) {
                    try (SSLSocket conn = (SSLSocket) listener.accept()) {
                        conn.setSoTimeout(20_000);
                        BufferedReader in = new BufferedReader(
                                new InputStreamReader(conn.getInputStream(), StandardCharsets.UTF_8));
                        String line;
                        String client;
                        try {
                            line = in.readLine();
                            client = peerId(conn.getSession().getPeerCertificates());
                        } catch (Exception err) {
                            Map<String, Object> refused = new LinkedHashMap<>();
                            refused.put("refused", err.getMessage());
                            emit(refused);
                            continue;
                        }
                        PrintWriter out = new PrintWriter(conn.getOutputStream(), true, StandardCharsets.UTF_8);
                        out.println(source.getX509Svid().getSpiffeId() + " answers " + client + ": " + line);
                        Map<String, Object> seen = new LinkedHashMap<>();
                        seen.put("client", client);
                        seen.put("said", line);
                        emit(seen);
                    }
                }
            }
        }
    }

    private static void dial(Map<String, String> flags) throws Exception {
        String[] address = required(flags, "address").split(":");
        try (DefaultX509Source source = DefaultX509Source.newSource()) {
            SSLContext tls = context(source, flags);
            try (SSLSocket conn = (SSLSocket) tls.getSocketFactory().createSocket(address[0], Integer.parseInt(address[1]))) {
                conn.setSoTimeout(20_000);
                conn.startHandshake();
                String server = peerId(conn.getSession().getPeerCertificates());
                PrintWriter out = new PrintWriter(conn.getOutputStream(), true, StandardCharsets.UTF_8);
                out.println(flags.getOrDefault("message", "ping"));
                String reply = new BufferedReader(new InputStreamReader(conn.getInputStream(), StandardCharsets.UTF_8))
                        .readLine();
                if (reply == null) {
                    throw new IllegalStateException("the server closed the connection without answering");
                }
                Map<String, Object> seen = new LinkedHashMap<>();
                seen.put("server", server);
                seen.put("reply", reply);
                emit(seen);
            }
        }
    }

    private static String required(Map<String, String> flags, String name) {
        String value = flags.get(name);
        if (value == null) {
            throw new IllegalArgumentException("-" + name + " is required");
        }
        return value;
    }

    private static void emit(Map<String, Object> value) {
        StringBuilder out = new StringBuilder("{");
        boolean first = true;
        for (Map.Entry<String, Object> entry : value.entrySet()) {
            if (!first) {
                out.append(", ");
            }
            first = false;
            out.append(quote(entry.getKey())).append(": ").append(json(entry.getValue()));
        }
        System.out.println(out.append('}'));
        System.out.flush();
    }

    private static String json(Object value) {
        if (value instanceof Number || value instanceof Boolean) {
            return value.toString();
        }
        if (value instanceof List<?> list) {
            List<String> items = new ArrayList<>();
            for (Object item : list) {
                items.add(json(item));
            }
            return "[" + String.join(", ", items) + "]";
        }
        return quote(String.valueOf(value));
    }

    private static String quote(String text) {
        StringBuilder out = new StringBuilder("\"");
        for (char c : text.toCharArray()) {
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                default -> {
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
                }
            }
        }
        return out.append('"').toString();
    }
}
