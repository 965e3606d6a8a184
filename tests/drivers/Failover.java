// The PostgreSQL JDBC driver through a pooler following a cluster while the cluster's primary
// fails over: 3 threads, each with a connection of its own, commit transactions of a
// server-side prepared INSERT (prepareThreshold=1) until the file STOP exists. A transaction
// that fails is counted, the connection is opened anew, as a connection pool would, and the
// thread goes on. Every read has a time limit (socketTimeout), so a connection the pooler left
// without an answer is reported as a stall instead of hanging the test.
// Prints the ids whose commit succeeded, one a line, then per thread
// "thread T errors N stalls S after M" (M: its commits after its first error), and each error.
// Usage: java -cp postgresql.jar Failover.java jdbc:postgresql://host:port/db?user=.. STOP PREFIX
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

public class Failover {
  static final int THREADS = 3;

  public static void main(String[] args) throws Exception {
    String url = args[0] + "&prepareThreshold=1&connectTimeout=5&socketTimeout=20";
    Path stop = Path.of(args[1]);
    String prefix = args[2];
    List<String> acked = Collections.synchronizedList(new ArrayList<>());
    List<String> messages = Collections.synchronizedList(new ArrayList<>());
    int[] errors = new int[THREADS];
    int[] stalls = new int[THREADS];
    int[] after = new int[THREADS];
    List<Thread> threads = new ArrayList<>();
    for (int i = 0; i < THREADS; i++) {
      final int t = i;
      Thread thread = new Thread(() -> {
        Connection c = null;
        for (int k = 0; !Files.exists(stop); k++) {
          String id = prefix + t + "-" + k;
          try {
            if (c == null) {
              c = DriverManager.getConnection(url);
              c.setAutoCommit(false);
            }
            try (PreparedStatement ins =
                     c.prepareStatement("INSERT INTO failover_ids (id) VALUES (?)")) {
              ins.setString(1, id);
              ins.executeUpdate();
            }
            c.commit();
            acked.add(id);
            if (errors[t] + stalls[t] > 0) after[t]++;
            Thread.sleep(5);
          } catch (InterruptedException e) {
            return;
          } catch (Throwable e) {
            String message = String.valueOf(e.getMessage());
            if (message.contains("Read timed out")) stalls[t]++; else errors[t]++;
            messages.add(id + ": " + e.getClass().getSimpleName() + ": " + message);
            try { if (c != null) c.close(); } catch (Throwable ignored) { }
            c = null;
            try { Thread.sleep(20); } catch (InterruptedException ignored) { return; }
          }
        }
        try { if (c != null) c.close(); } catch (Throwable ignored) { }
      });
      threads.add(thread);
      thread.start();
    }
    for (Thread thread : threads) thread.join();
    for (String id : acked) System.out.println(id);
    for (int t = 0; t < THREADS; t++) {
      System.out.println("thread " + t + " errors " + errors[t] + " stalls " + stalls[t] +
                         " after " + after[t]);
    }
    for (String m : messages) System.out.println("error " + m.replace('\n', ' '));
  }
}
